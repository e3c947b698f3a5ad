"""`gradchain query training`: rounds, submissions, audit verdicts and fraud claims, params.

A round goes submit -> commit -> reveal -> (dispute) -> merge -> merge_reveal
-> closed (abci_app/modules/training.py); merge is the merge votes' commit
window, merge_reveal the window that reveals them. `round` and the lists read
the computed views /training/current (the round in progress, or the last one)
and /training/round_detail ID, which carry the round with its submissions,
their revealed verdicts and fraud claims, and the revealed merge votes;
`params` reads the provable key /training/params.

Windows are heights. Submissions land while height < submit_until. Each later
phase starts in the block after the previous one ended and sets its X_until
then, so it starts at X_until - X_blocks; it ends by X_until - 1 at the latest,
earlier once everyone acted. A phase's real last height is therefore the next
phase's first height - 1; for the last phase a round went through only the
bound is known.
"""

from __future__ import annotations

import json
from typing import Any

import click

from abci_app.cli.common import Cli, CliError, abci_query, shared_flags
from abci_app.cli.query import Prover, proof_text, prove_option
from abci_app.modules import training as chain
from abci_app.rpc import AbciQueryResult, RpcClient

# The phases after submit, in order, with the param that bounds each one's length.
LATER_PHASES = (("commit", "verification_blocks"), ("reveal", "reveal_blocks"), ("dispute", "dispute_blocks"), ("merge", "merge_blocks"),
                ("merge_reveal", "reveal_blocks"))


def _json(result: AbciQueryResult, path: str) -> Any:
    try:
        return json.loads(result.value) if result.value else None
    except (UnicodeDecodeError, ValueError):
        raise CliError(f"query {path} returned {result.value[:32]!r}, not JSON") from None


def _params(rpc: RpcClient, node: str) -> dict:
    found = _json(abci_query(rpc, "/training/params"), "/training/params")
    if not isinstance(found, dict):
        raise CliError(f"node {node} has no training params (is it a gradchain node?)")
    return found


def round_params(rpc: RpcClient, node: str, rnd: dict) -> dict:
    """The params `rnd` runs under: those it opened with (a change passed since applies from the next round)."""
    return rnd.get("params") or _params(rpc, node)


def fetch_round(rpc: RpcClient, round_id: int | None) -> tuple[dict | None, int]:
    """(round view, height): round `round_id`, or the current (else the last) round when None."""
    path, data = ("/training/current", "") if round_id is None else ("/training/round_detail", str(round_id))
    result = abci_query(rpc, path, data)
    found = _json(result, path)
    if found is not None and not isinstance(found, dict):
        raise CliError(f"query {path} returned {type(found).__name__}, expected a round")
    return found, result.height


def _require_round(rpc: RpcClient, round_id: int | None) -> tuple[dict, int]:
    found, height = fetch_round(rpc, round_id)
    if found is not None:
        return found, height
    if round_id is None:
        raise CliError(f"no training round has opened yet at height {height} (a round opens once training is enabled and a trainer is bonded: `gradchain query training params`)")
    latest, _ = fetch_round(rpc, None)
    hint = f"the latest is round {latest['id']}" if latest else "no round has opened yet"
    raise CliError(f"round {round_id} does not exist at height {height} ({hint}; see `gradchain query training round`)")


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _heights(first: int, last: int) -> str:
    return f"height {first}" if first == last else f"heights {first}-{last}"


def _window(first: int, last: int, height: int, current: bool, note: str = "") -> str:
    """`heights A-B`, and where the chain is relative to it."""
    text = f"{_heights(first, last)}{note}"
    if current:
        left = last - height
        return text + (f" (now; {left} block{'s' if left != 1 else ''} left)" if left > 0 else " (now; ends with the next block)")
    return text


def _micro(value: int) -> str:
    return f"{value / 1e6:.4f}"


_CLAIM_NAMES = {chain.CLAIM_ENDPOINTS_OFFSET: "endpoints", chain.CLAIM_UNAVAILABLE_OFFSET: "unavailable",
                chain.CLAIM_DATASET_OFFSET: "dataset unavailable"}


def _step_name(step: int, steps: int) -> str:
    """A fraud claim's step: a training step, or past the last one the endpoints (k), the trainer's files
    unavailable (k + 1) or a drawn dataset unavailable (k + 2)."""
    return str(step) if step < steps else _CLAIM_NAMES.get(step - steps, "unavailable")


# --- round ----------------------------------------------------------------------------


SKIPPED = {"commit": "no submissions", "reveal": "no submissions", "dispute": "no fraud claim", "merge": "nothing accepted",
           "merge_reveal": "nothing accepted"}


def phase_lines(rnd: dict, params: dict, height: int) -> list[str]:
    """One line per phase: its heights, exact once the next phase has started, else bounds."""
    phase = rnd["phase"]
    texts = {"submit": _window(rnd["open_height"], rnd["submit_until"] - 1, height, phase == "submit")}
    started = [(name, rnd[f"{name}_until"] - params[blocks], rnd[f"{name}_until"] - 1) for name, blocks in LATER_PHASES if rnd[f"{name}_until"]]
    for i, (name, first, bound) in enumerate(started):
        if i + 1 < len(started):  # over: it ended in the block before the next one started
            last = started[i + 1][1] - 1
            texts[name] = _heights(first, last) + (" (ended early: everyone acted)" if last < bound else "")
        else:
            texts[name] = _window(first, bound, height, phase == name, " at the latest")
    for name, blocks in LATER_PHASES:
        if name in texts:
            continue
        if phase == "closed" or (name == "dispute" and phase in ("merge", "merge_reveal")):
            texts[name] = f"- ({SKIPPED[name]})"
        elif name == "commit":  # it starts right after the submission window
            texts[name] = _heights(rnd["submit_until"], rnd["submit_until"] + params[blocks] - 1) + " at the latest"
        elif name == "reveal":
            texts[name] = f"after the commit phase, {params[blocks]} blocks at most"
        elif name == "dispute":
            texts[name] = f"only if an auditor claims fraud, {params[blocks]} blocks at most"
        elif name == "merge":
            texts[name] = f"after verification, if a submission is accepted; {params[blocks]} blocks at most"
        else:
            texts[name] = f"after the merge votes are sealed, {params[blocks]} blocks at most"
    return [f"{name + ':':<15}{texts[name]}" for name in ("submit", *(name for name, _ in LATER_PHASES))]


def _committee_text(rnd: dict, params: dict) -> str:
    validators = sum(1 for _, power in rnd["powers"] if power > 0)
    size = params["committee_size"]
    if size == 0 or size >= validators:
        return f"every validator of the round ({validators})"
    return f"{size} of the round's {validators} validators, drawn by stake for each submission"


def mix_rows(rpc: RpcClient, rnd: dict) -> list[dict]:
    """The round's dataset mix: each admitted dataset's id, name, weight and the steps its submissions drew from it."""
    drawn: dict[int, int] = {}
    for sub in rnd["submission_list"]:  # the same draw the chain and the trainer make
        for dataset_id, n in chain.step_counts(rnd["seed"], sub["trainer"], rnd.get("mix") or [], sub["steps"]):
            drawn[dataset_id] = drawn.get(dataset_id, 0) + n
    out = []
    for dataset_id, weight in rnd.get("mix") or []:  # at most datasets.MAX_ADMITTED: one query each
        found = _json(abci_query(rpc, "/datasets/dataset", str(dataset_id)), "/datasets/dataset")
        name = found.get("name", "") if isinstance(found, dict) else ""
        out.append({"dataset": dataset_id, "name": name, "weight": weight, "steps_drawn": drawn.get(dataset_id, 0)})
    return out


def _mix_lines(mix: list[dict]) -> list[str]:
    if not mix:
        return ["mix:           -"]
    total = sum(m["weight"] for m in mix) or 1
    rows = [(m["dataset"], m["name"] or "-", m["weight"], f"{100 * m['weight'] / total:.1f}%", m["steps_drawn"]) for m in mix]
    table = _table(("DATASET", "NAME", "WEIGHT", "SHARE", "STEPS DRAWN"), rows)
    return ["mix:           datasets the round's steps draw from (steps drawn: over its submissions)", *("  " + line for line in table.splitlines())]


def _round_text(rnd: dict, height: int, params: dict, mix: list[dict]) -> str:
    phase = rnd["phase"]
    subs = rnd["submission_list"]
    steps, sampled = params["steps"], params["audit_steps"]
    lines = [
        f"round:         {rnd['id']} ({phase})",
        f"height:        {height}",
        f"base version:  {rnd['base_version']}",
        f"dataset:       {rnd['dataset_id']}",
        f"seed:          {rnd['seed']}",
        f"beacon:        {rnd['beacon'] or '- (the hash of the block that closes the submission window)'}",
        f"audit:         {sampled} of {steps} steps recomputed by each auditor" + (" (all of them)" if sampled >= steps else ""),
        f"committee:     {_committee_text(rnd, params)}",
        *phase_lines(rnd, params, height),
    ]
    auditors = len(rnd["auditors"])
    lines.append(f"auditors:      {auditors} ({rnd['commits']} committed, {rnd['reveals']} revealed)" if auditors else "auditors:      -")
    outcomes = [c["outcome"] or "open" for s in subs for c in s["claims"]]
    decided = ", ".join(f"{outcomes.count(o)} {o}" for o in ("open", "upheld", "refuted", "undecided") if o in outcomes)
    claims = f"claims:        {rnd['claims']}" + (f" ({decided})" if decided else "")
    if rnd["claims"] or rnd["judges"]:
        claims += f"; judged by {rnd['judges']} of {len(rnd['powers'])} validators"
    lines.append(claims)
    counts = {s: sum(1 for x in subs if x["status"] == s) for s in ("pending", "accepted", "not_merged", "rejected", "expired")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines += [
        f"aggregator:    {rnd['aggregator'] or '-'}",
        f"submissions:   {rnd['submissions']}" + (f" ({summary})" if summary else ""),
        f"accepted:      {', '.join(map(str, rnd['accepted'])) or '-'}",
        f"merge votes:   {rnd['merge_commits']} committed, {len(rnd['merge_votes'])} revealed",
        f"version:       {'-' if rnd['version'] is None else rnd['version']}",
        *_mix_lines(mix),
    ]
    return "\n".join(lines)


@click.group("training")
def training_query() -> None:
    """Training queries: rounds, submissions, verdicts and fraud claims, params."""


@training_query.command("round", context_settings={"ignore_unknown_options": True})  # `round -1`: a bad N, not an unknown option
@click.argument("round_id", metavar="[N]", type=click.IntRange(min=0), required=False)
@shared_flags()
def round_(cli: Cli, round_id: int | None) -> None:
    """Show round N (default: the round in progress, else the last one): phase windows, beacon, audit, outcome, dataset mix.

    The audit lines (steps each auditor recomputes, committee size) and the
    windows are the training params the round opened with (a change passed by
    gov applies from the next round). The mix lists the admitted datasets the
    round's steps draw from, by weight, and how many steps its submissions
    drew from each. -o json prints the round view as the chain serves it,
    with the mix ("datasets") and the query height.

    \b
    Example:
      $ gradchain query training round
      $ gradchain query training round 0 -o json
    """
    with cli.rpc() as rpc:
        rnd, height = _require_round(rpc, round_id)
        mix = mix_rows(rpc, rnd)
        text = _round_text(rnd, height, round_params(rpc, cli.node, rnd), mix) if cli.output != "json" else ""
    cli.emit(rnd | {"datasets": mix, "height": height}, text)


# --- submissions ----------------------------------------------------------------------


def _committee_cell(sub: dict) -> str:
    return f"{len(sub['committee'])} (power {sub['committee_power']})" if sub["committee"] else "-"


@training_query.command("submissions")
@click.option("--round", "round_id", type=click.IntRange(min=0), default=None, metavar="N", help="Round id [default: the current round].")
@shared_flags()
def submissions(cli: Cli, round_id: int | None) -> None:
    """List a round's submissions: trainer, status, committee, accept / no-gain / fraud power, losses.

    COMMITTEE is the number of auditors drawn for the submission (and their
    power); ACCEPT, NO GAIN and FRAUD are the committee power that revealed
    each verdict. Status not_merged: the committee found the work correct but
    the held-out loss regressed; it is not merged and earns nothing, and the
    trainer's bond is not slashed. rejected: a fraud claim was upheld,
    slashed. expired: no decision in time; bond and check fee returned.
    -o json adds each submission's CID, trajectory and committee.

    \b
    Example:
      $ gradchain query training submissions --round 0
    """
    with cli.rpc() as rpc:
        rnd, height = _require_round(rpc, round_id)
    subs = [{k: v for k, v in s.items() if k not in ("verdicts", "claims")} for s in rnd["submission_list"]]
    data = {"round": rnd["id"], "phase": rnd["phase"], "height": height, "submissions": subs}
    if not subs:
        if cli.output == "json":
            cli.emit(data, "")
        else:
            click.echo(f"round {rnd['id']} ({rnd['phase']}) has no submissions at height {height}", err=True)
        return
    header = ("INDEX", "TRAINER", "STATUS", "COMMITTEE", "ACCEPT", "NO GAIN", "FRAUD", "LOSS BEFORE", "LOSS AFTER")
    rows = [(s["index"], s["trainer"], s["status"], _committee_cell(s), s["accept_power"], s["no_gain_power"], s["reject_power"],
             _micro(s["loss_before_micro"]), _micro(s["loss_after_micro"])) for s in subs]
    cli.emit(data, f"round {rnd['id']} ({rnd['phase']}), height {height}\n" + _table(header, rows))


# --- verdicts -------------------------------------------------------------------------


def _proof_word(entry: dict) -> str:
    """ok: every sampled step's proof matches the trainer's commitment; bad: some does not; none: not proven (another kernel path)."""
    if entry["verdict"] == "fraud":
        return "-"
    return ("ok" if entry["proof_ok"] else "bad") if entry["proven"] else "none"


def _verdicts_text(rnd: dict, height: int, params: dict, subs: list[dict], votes: list[dict]) -> str:
    steps = {s["index"]: s["steps"] for s in subs}
    parts = [f"round {rnd['id']} ({rnd['phase']}), height {height}"]
    verdicts = [(s["index"], e) for s in subs for e in s["verdicts"]]
    if verdicts:
        header = ("SUBMISSION", "VALIDATOR", "VERDICT", "POWER", "STEPS CHECKED", "PROOF", "FRAUD STEP", "ERROR PPM", "HEIGHT", "REASON")
        rows = [(i, e["validator"], e["verdict"], e["power"], ",".join(map(str, e["steps_checked"])) or "-", _proof_word(e),
                 _step_name(e["fraud_step"], steps[i]) if e["verdict"] == "fraud" else "-", e["measured_error_ppm"], e["height"],
                 e["reason"] or "-") for i, e in verdicts]
        parts.append(_table(header, rows))
    claims = [c for s in subs for c in s["claims"]]
    if claims:
        needed = chain.quorum(chain.Params(**params), rnd["total_power"])
        parts.append(f"fraud claims: upheld or refuted by {needed} of the round's {rnd['total_power']} power")
        header = ("SUBMISSION", "STEP", "CLAIMANTS", "VALID", "INVALID", "OUTCOME")
        rows = [(c["submission"], _step_name(c["step"], steps[c["submission"]]), ",".join(c["claimants"]), c["valid_power"], c["invalid_power"],
                 c["outcome"] or "open") for c in claims]
        parts.append(_table(header, rows))
    if votes:
        header = ("MERGE VOTE BY", "POWER", "HELD-OUT", "SHA256", "CID")
        rows = [(v["validator"], v["power"], _micro(v["held_out_loss_micro"]), v["sha256"], v["cid"]) for v in votes]
        parts.append(_table(header, rows))
    return "\n".join(parts)


def _show_verdicts(cli: Cli, round_id: int | None, index: int | None) -> None:
    with cli.rpc() as rpc:
        rnd, height = _require_round(rpc, round_id)
        params = round_params(rpc, cli.node, rnd) if cli.output != "json" else {}  # the claims' quorum
    subs = rnd["submission_list"]
    if index is not None:
        subs = [s for s in subs if s["index"] == index]
        if not subs:
            raise CliError(f"round {rnd['id']} has no submission {index} ({rnd['submissions']} submitted; see `gradchain query training submissions --round {rnd['id']}`)")
    verdicts = [{"submission": s["index"], **e} for s in subs for e in s["verdicts"]]
    claims = [c for s in subs for c in s["claims"]]
    votes = rnd["merge_votes"] if index is None else []
    data: dict[str, Any] = {"round": rnd["id"], "phase": rnd["phase"], "height": height, "verdicts": verdicts, "claims": claims}
    if index is None:
        data["merge_votes"] = votes
    else:
        data["submission"] = index
    if cli.output == "json":
        cli.emit(data, "")
    elif verdicts or votes:
        cli.emit(data, _verdicts_text(rnd, height, params, subs, votes))
    else:
        what = f"submission {index} of round {rnd['id']}" if index is not None else f"round {rnd['id']}"
        sealed = f"; {rnd['commits']} of {len(rnd['auditors'])} auditors committed, verdicts open in the reveal phase" if rnd["phase"] == "commit" else ""
        click.echo(f"no verdicts revealed for {what} ({rnd['phase']}{sealed}) at height {height}", err=True)


def _verdict_options(command: Any) -> Any:
    """--round, --submission and the shared flags: `verdicts` and its deprecated alias take the same."""
    command = shared_flags()(command)
    command = click.option("--submission", "index", type=click.IntRange(min=0), default=None, metavar="I", help="Only this submission's verdicts and claims.")(command)
    return click.option("--round", "round_id", type=click.IntRange(min=0), default=None, metavar="N", help="Round id [default: the current round].")(command)


@training_query.command("verdicts")
@_verdict_options
def verdicts(cli: Cli, round_id: int | None, index: int | None) -> None:
    """List the auditors' revealed verdicts on a round's submissions, the fraud claims and their judgement, and the revealed merge votes.

    A verdict is accept (the sampled steps reproduce, and the delta helps),
    no_gain (they reproduce, but the held-out loss regressed: not merged, not
    slashed) or fraud, naming the step that does not reproduce (or the
    endpoints, or content that could not be fetched). PROOF: ok when the
    auditor's gradient proof of every step it checked matches the trainer's
    commitment, bad when one does not (the verdict counts for nothing), none
    when it gave no proofs (another kernel path). Every validator of the round
    judges each fraud claim in the dispute phase: VALID is the power that says
    the step reproduces (the claim is false), INVALID the power that says it
    does not. Verdicts are sealed until the reveal phase, merge votes until
    the merge_reveal phase.

    \b
    Example:
      $ gradchain query training verdicts --round 0 --submission 1
    """
    _show_verdicts(cli, round_id, index)


# --- params ---------------------------------------------------------------------------


@training_query.command("params")
@shared_flags()
@prove_option
def params(cli: Cli, prove: Prover | None) -> None:
    """Show the training parameters: windows, steps, audit sample and committee, reward, slashing, quorum.

    Values in millionths (`_micro`, `_ppm`) and basis points (`_bps`, 10000 = 100%) are integers on chain.

    \b
    Example:
      $ gradchain query training params -o json
    """
    with cli.rpc() as rpc:
        if prove:
            result, report = prove.query(rpc, "/training/params", "")
        else:
            result, report = abci_query(rpc, "/training/params"), None
    found = _json(result, "/training/params")
    if not isinstance(found, dict):
        raise CliError(f"node {cli.node} has no training params (is it a gradchain node?)")
    width = max(map(len, found), default=0) + 2
    lines = [f"{name + ':':<{width}}{json.dumps(value) if isinstance(value, bool) else value}" for name, value in sorted(found.items())]
    data = dict(found)
    if report is not None:
        data["proof"] = report
        lines.append(proof_text(report))
    cli.emit(data, "\n".join(lines))
