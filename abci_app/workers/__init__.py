"""Off-chain daemons: the trainer (`gradchain train`) and the validator (`gradchain validate`)."""
