"""`gradchain query training`: rounds, submissions, attestations, params.

A round goes submit -> verify -> merge -> closed (abci_app/modules/training.py).
`round` and the lists read the computed views /training/current (the round in
progress, or the last one) and /training/round_detail ID, which carry the
round with its submissions, attestations and merge votes; `params` reads the
provable key /training/params.

Windows are heights: submissions land while height < submit_until; the
verification phase ends by verify_until - 1 (earlier once the submission
window is over and every submission is decided); a merge ends by
merge_until - 1.
"""

from __future__ import annotations

import json
from typing import Any

import click

from abci_app.cli.common import Cli, CliError, abci_query, shared_flags
from abci_app.cli.query import Prover, proof_text, prove_option
from abci_app.rpc import AbciQueryResult, RpcClient

def _json(result: AbciQueryResult, path: str) -> Any:
    try:
        return json.loads(result.value) if result.value else None
    except (UnicodeDecodeError, ValueError):
        raise CliError(f"query {path} returned {result.value[:32]!r}, not JSON") from None


def _round(rpc: RpcClient, round_id: int | None) -> tuple[dict | None, int]:
    """(round view, height): round `round_id`, or the current (else the last) round when None."""
    path, data = ("/training/current", "") if round_id is None else ("/training/round_detail", str(round_id))
    result = abci_query(rpc, path, data)
    found = _json(result, path)
    if found is not None and not isinstance(found, dict):
        raise CliError(f"query {path} returned {type(found).__name__}, expected a round")
    return found, result.height


def _require_round(rpc: RpcClient, round_id: int | None) -> tuple[dict, int]:
    found, height = _round(rpc, round_id)
    if found is not None:
        return found, height
    if round_id is None:
        raise CliError(f"no training round has opened yet at height {height} (a round opens once training is enabled and a trainer is bonded: `gradchain query training params`)")
    latest, _ = _round(rpc, None)
    hint = f"the latest is round {latest['id']}" if latest else "no round has opened yet"
    raise CliError(f"round {round_id} does not exist at height {height} ({hint}; see `gradchain query training round`)")


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _window(first: int, last: int, height: int, current: bool, note: str = "") -> str:
    """`heights A-B`, and where the chain is relative to it."""
    text = f"heights {first}-{last}{note}"
    if current:
        left = last - height
        return text + (f" (now; {left} block{'s' if left != 1 else ''} left)" if left > 0 else " (now; ends with the next block)")
    return text


def _micro(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.4f}"


def _round_text(rnd: dict, height: int, merge_blocks: int) -> str:
    phase = rnd["phase"]
    verify_first = rnd["submit_until"]
    lines = [
        f"round:         {rnd['id']} ({phase})",
        f"height:        {height}",
        f"base version:  {rnd['base_version']}",
        f"dataset:       {rnd['dataset_id']}",
        f"seed:          {rnd['seed']}",
        f"submit:        {_window(rnd['open_height'], rnd['submit_until'] - 1, height, phase == 'submit')}",
    ]
    merge_first = max(verify_first, rnd["merge_until"] - merge_blocks) if rnd.get("merge_until") else None
    if merge_first is not None:  # verification is over: it ended in the block before the merge began
        lines.append(f"verify:        ended at height {merge_first - 1} (every submission decided, or the window over)")
        lines.append(f"merge:         {_window(merge_first, rnd['merge_until'] - 1, height, phase == 'merge')}")
    else:
        lines.append(f"verify:        {_window(verify_first, rnd['verify_until'] - 1, height, phase == 'verify', ' at the latest')}")
        lines.append("merge:         -" if phase == "closed" else "merge:         after verification, if a submission is accepted")
    subs = rnd.get("submission_list") or []
    counts = {s: sum(1 for x in subs if x["status"] == s) for s in ("pending", "accepted", "not_merged", "rejected", "expired")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    lines += [
        f"aggregator:    {rnd.get('aggregator') or '-'}",
        f"submissions:   {rnd['submissions']}" + (f" ({summary})" if summary else ""),
        f"accepted:      {', '.join(map(str, rnd.get('accepted') or [])) or '-'}",
        f"merge votes:   {len(rnd.get('merge_votes') or [])}",
        f"version:       {'-' if rnd.get('version') is None else rnd['version']}",
    ]
    return "\n".join(lines)


@click.group("training")
def training_query() -> None:
    """Training queries: rounds, submissions, attestations, params."""


@training_query.command("round", context_settings={"ignore_unknown_options": True})  # `round -1`: a bad N, not an unknown option
@click.argument("round_id", metavar="[N]", type=click.IntRange(min=0), required=False)
@shared_flags()
def round_(cli: Cli, round_id: int | None) -> None:
    """Show round N (default: the round in progress, else the last one): phase, windows, seed, outcome.

    \b
    Example:
      $ gradchain query training round
      $ gradchain query training round 0 -o json
    """
    with cli.rpc() as rpc:
        rnd, height = _require_round(rpc, round_id)
        merge_blocks = 0
        if rnd.get("merge_until"):  # the round stores where its merge ends; it started merge_blocks before
            merge_blocks = int((_json(abci_query(rpc, "/training/params"), "/training/params") or {}).get("merge_blocks", 0))
    cli.emit(rnd | {"height": height}, _round_text(rnd, height, merge_blocks))


@training_query.command("submissions")
@click.option("--round", "round_id", type=click.IntRange(min=0), default=None, metavar="N", help="Round id [default: the current round].")
@shared_flags()
def submissions(cli: Cli, round_id: int | None) -> None:
    """List a round's submissions: trainer, status, accept / no-gain / fraud power, held-out losses, CID.

    Status not_merged: validators found the work correct (recomputed) but the
    held-out loss regressed; it is not merged and earns nothing, and the
    trainer's bond is not slashed. rejected: fraud, slashed.

    \b
    Example:
      $ gradchain query training submissions --round 0
    """
    with cli.rpc() as rpc:
        rnd, height = _require_round(rpc, round_id)
    subs = [{k: v for k, v in s.items() if k != "attestations"} for s in rnd.get("submission_list") or []]
    data = {"round": rnd["id"], "phase": rnd["phase"], "height": height, "submissions": subs}
    if not subs:
        if cli.output == "json":
            cli.emit(data, "")
        else:
            click.echo(f"round {rnd['id']} ({rnd['phase']}) has no submissions at height {height}", err=True)
        return
    header = ("INDEX", "TRAINER", "STATUS", "ACCEPT", "NO GAIN", "FRAUD", "LOSS BEFORE", "LOSS AFTER", "CID")
    rows = [(s["index"], s["trainer"], s["status"], s["accept_power"], s.get("no_gain_power", 0), s["reject_power"], _micro(s.get("loss_before_micro")),
             _micro(s.get("loss_after_micro")), s["cid"]) for s in subs]
    cli.emit(data, f"round {rnd['id']} ({rnd['phase']}), height {height}\n" + _table(header, rows))


@training_query.command("attestations")
@click.option("--round", "round_id", type=click.IntRange(min=0), default=None, metavar="N", help="Round id [default: the current round].")
@click.option("--submission", "index", type=click.IntRange(min=0), default=None, metavar="I", help="Only this submission's attestations.")
@shared_flags()
def attestations(cli: Cli, round_id: int | None, index: int | None) -> None:
    """List validators' verdicts on a round's submissions, and their merge votes.

    A verdict is accept (recomputed, and it helps), no_gain (recomputed, but the
    held-out loss regressed: not merged, not slashed) or fraud (does not match).

    \b
    Example:
      $ gradchain query training attestations --round 0 --submission 1
    """
    with cli.rpc() as rpc:
        rnd, height = _require_round(rpc, round_id)
    subs = rnd.get("submission_list") or []
    if index is not None:
        subs = [s for s in subs if s["index"] == index]
        if not subs:
            raise CliError(f"round {rnd['id']} has no submission {index} ({rnd['submissions']} submitted; see `gradchain query training submissions --round {rnd['id']}`)")
    atts = [{"submission": s["index"], **a} for s in subs for a in s.get("attestations") or []]
    votes = (rnd.get("merge_votes") or []) if index is None else []
    data: dict[str, Any] = {"round": rnd["id"], "phase": rnd["phase"], "height": height, "attestations": atts}
    if index is None:
        data["merge_votes"] = votes
    else:
        data["submission"] = index
    if not atts and not votes:
        what = f"submission {index} of round {rnd['id']}" if index is not None else f"round {rnd['id']} ({rnd['phase']})"
        if cli.output == "json":
            cli.emit(data, "")
        else:
            click.echo(f"no attestations for {what} at height {height}", err=True)
        return
    parts = [f"round {rnd['id']} ({rnd['phase']}), height {height}"]
    if atts:
        header = ("SUBMISSION", "VALIDATOR", "VERDICT", "POWER", "ERROR PPM", "HEIGHT", "REASON")
        rows = [(a["submission"], a["validator"], _verdict_word(a), a["power"], a["measured_error_ppm"], a["height"],
                 a.get("reason") or "-") for a in atts]
        parts.append(_table(header, rows))
    if votes:
        header = ("MERGE VOTE BY", "POWER", "HELD-OUT", "SHA256", "CID")
        rows = [(v["validator"], v["power"], _micro(v.get("held_out_loss_micro")), v["sha256"], v["cid"]) for v in votes]
        parts.append(_table(header, rows))
    cli.emit(data, "\n".join(parts))


def _verdict_word(att: dict) -> str:
    return "accept" if att["accept"] else "no_gain" if att.get("no_gain") else "fraud"


@training_query.command("params")
@shared_flags()
@prove_option
def params(cli: Cli, prove: Prover | None) -> None:
    """Show the training parameters: windows, steps, batch, tolerance, reward, slashing, quorum.

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
