"""IPFS for GradientChain: Kubo RPC client, local UnixFS CID computation, Kubo node management.

- `client`: `IpfsClient` over Kubo's HTTP RPC; every failure is an `IpfsError`.
- `cid`: `cid_of_bytes`, `cid_of_file`, `CidVerifier` (check streamed bytes against their CID).
- `node`: `init_node`/`start_node`/`stop_node` and `Swarm`, a private swarm of Kubo nodes on loopback.
"""

from abci_app.ipfs.cid import CidMismatch, CidVerifier, cid_of_bytes, cid_of_file
from abci_app.ipfs.client import IpfsClient, IpfsError

__all__ = ["CidMismatch", "CidVerifier", "IpfsClient", "IpfsError", "cid_of_bytes", "cid_of_file"]
