"""`gradchain tx gov` and `gradchain query gov`: proposals, deposits, votes, tallies, params.

A proposal file is JSON like the Cosmos SDK's (`submit-proposal --draft`
writes one that changes a module's params):

    {"title": "...", "summary": "...", "deposit": "10000000ugrad", "expedited": false,
     "messages": [{"@type": "update_params", "module": "training", "params_sha256": "<hex>", "params": {...the whole set...}}]}

`params_sha256` is the digest of the params the set was drafted against
(`--draft` fills it): if another proposal changes them first, this one fails
rather than undoing that change. Likewise `set_dataset_weight` may carry the
dataset's `sha256` (`--draft --admit N` fills it): dataset ids are first
come, so the message fails if N holds other content when it runs. `query gov proposal N` shows each params
message as a diff against the current params, and says when it is stale.

Each message's "@type" is a TxBody message name (`update_params`,
`register_version`, `set_dataset_weight`, ...) or its type (`MsgUpdateParams`);
its other keys are the message's fields. The chain checks everything again
when the proposal is submitted: a proposal that could only fail is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import Any

import click
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from abci_app import tx as txlib
from abci_app.cli.common import AMOUNT, DENOM, Cli, CliError, abci_query, query_pages, shared_flags, signer_key
from abci_app.cli.tx import sign_and_broadcast, tx_flags
from abci_app.modules import gov

OPTION_NUMBERS = {name: number for number, name in gov.OPTIONS.items()}
MAX_PROPOSAL_FILE = 256 * 1024  # far above what fits in one tx (64 KiB); refuse bigger files before parsing


# --- proposal files -------------------------------------------------------------------


def _message_types() -> dict[str, str]:
    """Every name a message may go by in a proposal file -> its TxBody field."""
    names = {}
    for field in txlib.TxBody.DESCRIPTOR.oneofs_by_name["msg"].fields:
        names[field.name] = field.name
        names[field.message_type.name] = field.name
        names["/" + field.message_type.full_name] = field.name
    return names


def message_from_json(entry: Any, index: int) -> txlib.TxBody:
    """One proposal-file message as the TxBody entry the chain takes; CliError naming what is wrong."""
    if not isinstance(entry, dict) or not isinstance(entry.get("@type"), str):
        raise CliError(f"proposal message {index} must be an object with an \"@type\" (e.g. \"update_params\")")
    fields = dict(entry)
    kind = fields.pop("@type")
    field = _message_types().get(kind)
    if field is None:
        raise CliError(f"proposal message {index}: unknown @type {kind!r} (e.g. update_params, register_version)")
    if field == "update_params" and "params" in fields:
        if not isinstance(fields["params"], dict):
            raise CliError(f"proposal message {index}: \"params\" must be an object of every field of the module's params")
        fields["params_json"] = json.dumps(fields.pop("params"), sort_keys=True, separators=(",", ":"))
    body = txlib.TxBody()
    try:
        json_format.ParseDict(fields, getattr(body, field))
    except json_format.ParseError as exc:
        raise CliError(f"proposal message {index} ({field}): {' '.join(str(exc).split())}") from None
    return body


def read_proposal(path: Path) -> tuple[txlib.MsgSubmitProposal, dict]:
    """The MsgSubmitProposal a proposal file describes (deposit included), and the file's JSON."""
    try:
        if path.stat().st_size > MAX_PROPOSAL_FILE:
            raise CliError(f"{path} is over {MAX_PROPOSAL_FILE} bytes: a proposal must fit in one tx")
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise CliError(f"no proposal file {path} (write a skeleton with `gradchain tx gov submit-proposal {path} --draft`)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CliError(f"{path} must hold a JSON object with title, summary, deposit and messages")
    unknown = sorted(set(doc) - {"title", "summary", "deposit", "expedited", "messages"})
    if unknown:
        raise CliError(f"{path}: unknown keys {', '.join(unknown)} (expected title, summary, deposit, expedited, messages)")
    for name in ("title", "summary"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise CliError(f"{path}: \"{name}\" must be a non-empty string")
    if not isinstance(doc.get("messages"), list) or not doc["messages"]:
        raise CliError(f"{path}: \"messages\" must be a non-empty list")
    if not isinstance(doc.get("expedited", False), bool):
        raise CliError(f"{path}: \"expedited\" must be true or false")
    try:
        deposit = AMOUNT.convert(str(doc.get("deposit", "")), None, None)
    except click.BadParameter as exc:
        raise CliError(f"{path}: \"deposit\": {exc.message}") from None
    messages = [message_from_json(entry, i) for i, entry in enumerate(doc["messages"])]
    msg = txlib.MsgSubmitProposal(messages=messages, initial_deposit=deposit, title=doc["title"], summary=doc["summary"],
                                  expedited=doc.get("expedited", False))
    return msg, doc


def parse_settings(settings: tuple[str, ...]) -> dict[str, Any]:
    """--set NAME=VALUE pairs, each VALUE as JSON when it parses (32, true, "x") and as a string otherwise."""
    values = {}
    for setting in settings:
        name, sep, text = setting.partition("=")
        if not sep or not name:
            raise CliError(f"--set {setting!r}: expected NAME=VALUE, e.g. --set steps=32")
        try:
            values[name] = json.loads(text)
        except ValueError:
            values[name] = text
    return values


def draft(cli: Cli, module: str, settings: dict[str, Any] | None = None) -> dict:
    """A valid proposal that sets `module`'s params to what the chain has now, with `settings` applied: edit, then submit."""
    with cli.rpc() as rpc:
        all_params = _json(abci_query(rpc, "/app/params"), "/app/params")
    if not isinstance(all_params, dict) or not isinstance(all_params.get("gov"), dict):
        raise CliError(f"node {cli.node} publishes no gov params (is it a gradchain node with governance?)")
    current = all_params.get(module)
    if not isinstance(current, dict) or not current:
        have = ", ".join(sorted(name for name, p in all_params.items() if p))
        raise CliError(f"the chain has no {module!r} params (modules with params: {have})")
    unknown = sorted(set(settings or {}) - set(current))
    if unknown:
        raise CliError(f"{module} has no param {', '.join(unknown)} (its params: {', '.join(sorted(current))})")
    drafted_against = params_sha256(current)
    current = current | (settings or {})
    changes = settings or {("steps" if module == "training" else sorted(current)[0]): None}
    described = ", ".join(f"{module}.{name} to {json.dumps(current[name])}" for name in changes)
    return {
        "title": f"Update {module} params",
        "summary": f"Set {described}. `params` below carries the whole set, as the chain has it plus these changes; "
                   f"the {module} module checks every value when the proposal is submitted.",
        "deposit": f"{all_params['gov']['min_deposit']}{DENOM}",
        "expedited": False,
        "messages": [{"@type": "update_params", "module": module, "params_sha256": drafted_against, "params": current}],
    }


def draft_admission(cli: Cli, dataset: int, weight: int) -> dict:
    """A valid proposal that admits dataset N (or reweights it; 0 delists), pinned to its sha256: ids are first
    come, so the message fails if N holds other content by the time the proposal runs."""
    with cli.rpc() as rpc:
        found = _json(abci_query(rpc, "/datasets/dataset", str(dataset)), "/datasets/dataset")
        all_params = _json(abci_query(rpc, "/app/params"), "/app/params")
    if not isinstance(found, dict) or not isinstance(found.get("sha256"), str):
        raise CliError(f"unknown dataset {dataset} (see `gradchain dataset list`)")
    if not isinstance(all_params, dict) or not isinstance(all_params.get("gov"), dict):
        raise CliError(f"node {cli.node} publishes no gov params (is it a gradchain node with governance?)")
    return {
        "title": f"Set dataset {dataset} weight to {weight}",
        "summary": f"Dataset {dataset} ({found.get('name', '')}, licence {found.get('licence', '')}, royalty "
                   f"{found.get('royalty_bps', 0)} bps, sha256 {found['sha256']}): sampling weight {weight}.",
        "deposit": f"{all_params['gov']['min_deposit']}{DENOM}",
        "expedited": False,
        "messages": [{"@type": "set_dataset_weight", "dataset": dataset, "weight": weight, "sha256": found["sha256"]}],
    }


def params_sha256(params: dict) -> str:
    """The digest the chain compares MsgUpdateParams.params_sha256 with: sha256 of the canonical JSON (gov.params_digest)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def params_diff(message: dict, all_params: dict) -> dict:
    """What an update_params message would change in its module's current params: {"changes": {name: {"current",
    "proposed"}}, "stale": whether the params changed since it was drafted (then it fails at execution)}."""
    current = all_params.get(message.get("module")) if isinstance(all_params, dict) else None
    proposed = message.get("params")
    if not isinstance(current, dict) or not isinstance(proposed, dict):
        return {"changes": {}, "stale": True}
    changes = {name: {"current": current.get(name), "proposed": proposed.get(name)}
               for name in sorted(set(current) | set(proposed)) if current.get(name) != proposed.get(name)}
    return {"changes": changes, "stale": message.get("params_sha256") != params_sha256(current)}


def message_to_json(body: txlib.TxBody) -> dict:
    """A stored proposal message, readable: {"@type": name, ...fields}, update_params' params as an object."""
    name = body.WhichOneof("msg")
    if name is None:
        return {"@type": None}
    fields = json_format.MessageToDict(getattr(body, name), preserving_proto_field_name=True)
    if name == "update_params":
        try:
            fields["params"] = json.loads(fields.pop("params_json", "{}"))
        except ValueError:
            pass
    return {"@type": name, **fields}


def decoded(proposal: dict) -> dict:
    messages = []
    for raw in proposal.get("messages") or []:
        try:
            messages.append(message_to_json(txlib.TxBody.FromString(base64.b64decode(raw))))
        except (binascii.Error, DecodeError, TypeError, ValueError):
            messages.append({"@type": None, "raw": raw})
    return {**proposal, "messages": messages}


# --- tx gov -------------------------------------------------------------------------------


@click.group("gov")
def gov_tx() -> None:
    """Governance transactions: submit proposals, deposit, vote."""


_from = click.option("--from", "from_", metavar="KEY", help="The key (name or address) that signs.")


def _signed(cli: Cli, from_: str | None, msg: Message, what: str, opts: dict) -> None:
    if not from_:
        raise CliError("--from KEY is required: the key that signs the transaction")
    key = signer_key(cli.keyring, from_)
    sign_and_broadcast(cli, key, msg, f"{what} (signer {from_}, {key.address})", wait=not opts.pop("no_wait"), **opts)


@gov_tx.command("submit-proposal")
@click.argument("file", metavar="FILE.json", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--draft", "write_draft", is_flag=True, help="Write a valid skeleton of a params proposal to FILE.json instead, then stop.")
@click.option("--module", default="training", show_default=True, help="With --draft: the module whose params the skeleton changes.")
@click.option("--set", "settings", multiple=True, metavar="NAME=VALUE", help="With --draft: a param's new value (repeatable), e.g. --set steps=32.")
@click.option("--admit", type=click.IntRange(min=0), metavar="N", help="With --draft: admit dataset N instead (pinned to its sha256).")
@click.option("--weight", type=click.IntRange(min=0), default=1000, show_default=True, help="With --draft --admit: its sampling weight (0 delists).")
@_from
@tx_flags
@shared_flags()
def submit_proposal(cli: Cli, file: Path, write_draft: bool, module: str, settings: tuple[str, ...], admit: int | None, weight: int,
                    from_: str | None, **opts: Any) -> None:
    """Submit the proposal in FILE.json, with its deposit, signed by --from.

    The chain runs every message as the gov module account when it takes the
    proposal: a proposal that could only fail is refused (nothing but the fee
    is charged). `--draft` writes a skeleton that changes a module's params
    (the whole set, as the chain has it now): edit it, then submit it.

    \b
    Example:
      $ gradchain tx gov submit-proposal steps.json --draft --module training --set steps=32 --set audit_steps=8
      $ gradchain tx gov submit-proposal steps.json --from alice --yes
      $ gradchain tx gov submit-proposal admit.json --draft --admit 1 --weight 1000
    """
    if (settings or admit is not None) and not write_draft:
        raise CliError("--set and --admit go with --draft (edit FILE.json to change a proposal you have)")
    if settings and admit is not None:
        raise CliError("--set drafts a params change, --admit a dataset admission: one at a time")
    if write_draft:
        if file.exists():
            raise CliError(f"{file} exists: --draft writes a new file (pick another name)")
        doc = draft(cli, module, parse_settings(settings)) if admit is None else draft_admission(cli, admit, weight)
        try:
            file.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
        except OSError as exc:
            raise CliError(f"cannot write {file}: {exc}") from None
        cli.emit({"draft": str(file), **doc}, f"wrote {file}: check (or edit) it, then\n  gradchain tx gov submit-proposal {file} --from KEY")
        return
    msg, doc = read_proposal(file)
    names = ", ".join(b.WhichOneof("msg") for b in msg.messages)
    kind = "expedited proposal" if msg.expedited else "proposal"
    _signed(cli, from_, msg, f"submit {kind} {msg.title!r} ({names}) with a deposit of {msg.initial_deposit} {DENOM}", opts)


@gov_tx.command("deposit", context_settings={"ignore_unknown_options": True})
@click.argument("proposal", metavar="N", type=click.IntRange(min=1))
@click.argument("amount", metavar="AMOUNT", type=AMOUNT)
@_from
@tx_flags
@shared_flags()
def deposit(cli: Cli, proposal: int, amount: int, from_: str | None, **opts: Any) -> None:
    """Add AMOUNT ugrad to proposal N's deposit (refunded unless it is vetoed or never reaches the minimum).

    \b
    Example:
      $ gradchain tx gov deposit 1 5000000 --from bob --yes
    """
    _signed(cli, from_, txlib.MsgDeposit(proposal=proposal, amount=amount), f"deposit {amount} {DENOM} on proposal {proposal}", opts)


@gov_tx.command("vote")
@click.argument("proposal", metavar="N", type=click.IntRange(min=1))
@click.argument("option", metavar="yes|no|abstain|no_with_veto", type=click.Choice(list(OPTION_NUMBERS), case_sensitive=False))
@_from
@tx_flags
@shared_flags()
def vote(cli: Cli, proposal: int, option: str, from_: str | None, **opts: Any) -> None:
    """Vote on proposal N with your bonded stake; a later vote replaces this one.

    A validator's vote also counts its delegators' stake unless they vote themselves.

    \b
    Example:
      $ gradchain tx gov vote 1 yes --from validator0 --yes
    """
    option = option.lower()
    _signed(cli, from_, txlib.MsgVote(proposal=proposal, option=OPTION_NUMBERS[option]), f"vote {option} on proposal {proposal}", opts)


# --- query gov ----------------------------------------------------------------------------


def _json(result, path: str) -> Any:
    try:
        return json.loads(result.value) if result.value else None
    except ValueError:
        raise CliError(f"query {path} returned {result.value[:64]!r}, not JSON") from None


def _query(cli: Cli, path: str, data: str = "") -> Any:
    with cli.rpc() as rpc:
        return _json(abci_query(rpc, path, data), path)


def _pages(cli: Cli, path: str, arg: str = "", after: str = "") -> list:
    with cli.rpc() as rpc:
        return query_pages(rpc, path, arg, after)[0]


def _table(header: tuple[str, ...], rows: list[tuple]) -> str:
    cells = [header] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _ends(p: dict) -> str:
    if p["status"] == gov.DEPOSIT_PERIOD:
        return f"deposits until {p['deposit_end']}"
    if p["status"] == gov.VOTING_PERIOD:
        return f"votes until {p['voting_end']}"
    return f"decided at {p['result_height']}"


@click.group("gov")
def gov_query() -> None:
    """Governance queries: proposals, votes, tallies, params."""


@gov_query.command("proposals")
@click.option("--status", type=click.Choice([gov.DEPOSIT_PERIOD, gov.VOTING_PERIOD, gov.PASSED, gov.REJECTED, gov.VETOED, gov.FAILED, gov.DROPPED]),
              default=None, help="Only proposals in this status.")
@shared_flags()
def proposals(cli: Cli, status: str | None) -> None:
    """List proposals, newest first, without their summaries and messages (`query gov proposal N` shows them).

    \b
    Example:
      $ gradchain query gov proposals --status voting_period -o json
    """
    listed = _pages(cli, "/gov/proposals", status or "")
    if cli.output == "json":
        return cli.emit({"proposals": listed}, "")
    if not listed:
        return click.echo(f"no proposals{' in ' + status if status else ''}", err=True)
    rows = [(p["id"], p["status"], p["title"][:48], f"{p['total_deposit']} {DENOM}", _ends(p)) for p in listed]
    cli.emit(None, _table(("ID", "STATUS", "TITLE", "DEPOSIT", "WHEN"), rows))


def _existing(cli: Cli, proposal: int) -> dict:
    found = _query(cli, "/gov/proposal", str(proposal))
    if not isinstance(found, dict):
        raise CliError(f"no proposal {proposal} (see `gradchain query gov proposals`)")
    return decoded(found)


@gov_query.command("proposal")
@click.argument("proposal", metavar="N", type=click.IntRange(min=1))
@shared_flags()
def proposal(cli: Cli, proposal: int) -> None:
    """Show proposal N: status, deposits, windows, the final tally, any failure reason, and its messages.

    \b
    Example:
      $ gradchain query gov proposal 1 -o json
    """
    found = _existing(cli, proposal)
    if any(m.get("@type") == "update_params" for m in found["messages"]):
        all_params = _query(cli, "/app/params")
        found["messages"] = [m | ({"diff": params_diff(m, all_params)} if m.get("@type") == "update_params" else {}) for m in found["messages"]]
    lines = [f"proposal {found['id']}: {found['title']}", f"status:   {found['status']}{' (expedited)' if found['expedited'] else ''}",
             f"proposer: {found['proposer']}", f"deposit:  {found['total_deposit']} {DENOM}"]
    if found["status"] == gov.DEPOSIT_PERIOD:
        lines[-1] += f" (deposits taken until height {found['deposit_end']})"
    if found["voting_start"]:
        lines.append(f"voting:   heights {found['voting_start']} to {found['voting_end']}")
    if found["tally"]:
        t = found["tally"]
        lines.append(f"tally:    yes {t['yes']}, no {t['no']}, abstain {t['abstain']}, no_with_veto {t['no_with_veto']} of {t['bonded']} bonded")
    if found["failed_reason"]:
        lines.append(f"reason:   {found['failed_reason']}")
    lines += ["summary:", *("  " + line for line in found["summary"].splitlines()), "messages:"]
    open_ = found["status"] in (gov.DEPOSIT_PERIOD, gov.VOTING_PERIOD)
    for m in found["messages"]:
        if "diff" not in m:
            lines.append(f"  {json.dumps(m, sort_keys=True)}")
            continue
        diff = m["diff"]
        note = ""
        if open_ and diff["stale"]:
            note = f" STALE: {m.get('module')} params changed since it was drafted, it will fail (draft it again)"
        lines.append(f"  update_params {m.get('module')}: {len(diff['changes'])} change(s) against the current params{note}")
        lines += [f"    {name}: {json.dumps(c['current'])} -> {json.dumps(c['proposed'])}" for name, c in diff["changes"].items()]
    cli.emit(found, "\n".join(lines))


@gov_query.command("votes")
@click.argument("proposal", metavar="N", type=click.IntRange(min=1))
@click.option("--after", default="", metavar="ADDRESS", help="List only the voters after this address.")
@shared_flags()
def votes(cli: Cli, proposal: int, after: str) -> None:
    """List the votes cast on proposal N, in address order (delegators who did not vote follow their validator).

    \b
    Example:
      $ gradchain query gov votes 1
      $ gradchain query gov votes 1 --after gc1...   # from the voter after gc1...
    """
    listed = _pages(cli, "/gov/votes", str(proposal), after)
    if cli.output == "json":
        return cli.emit({"proposal": proposal, "votes": listed}, "")
    if not listed:
        return click.echo(f"no votes on proposal {proposal}" + (f" after {after}" if after else ""), err=True)
    cli.emit(None, _table(("VOTER", "OPTION", "DELEGATED STAKE"), [(v["voter"], v["option"], v["stake"]) for v in listed]))


@gov_query.command("tally")
@click.argument("proposal", metavar="N", type=click.IntRange(min=1))
@shared_flags()
def tally(cli: Cli, proposal: int) -> None:
    """Show proposal N's tally: final once decided, else the running count of the votes cast so far.

    \b
    Example:
      $ gradchain query gov tally 1 -o json
    """
    t = _query(cli, "/gov/tally", str(proposal))
    voted = t["yes"] + t["no"] + t["abstain"] + t["no_with_veto"]
    lines = [f"{name + ':':<14}{t[name]}" for name in ("yes", "no", "abstain", "no_with_veto")]
    lines.append(f"{'voted:':<14}{voted} of {t['bonded']} bonded ({'final' if t['final'] else 'so far'})")
    cli.emit({"proposal": proposal, **t}, "\n".join(lines))


@gov_query.command("params")
@shared_flags()
def params(cli: Cli) -> None:
    """Show the gov parameters: deposits, windows, quorum, threshold, veto.

    \b
    Example:
      $ gradchain query gov params -o json
    """
    found = _query(cli, "/gov/params")
    if not isinstance(found, dict):
        raise CliError(f"node {cli.node} has no gov params (is it a gradchain node with governance?)")
    width = max(map(len, found), default=0) + 2
    cli.emit(found, "\n".join(f"{name + ':':<{width}}{json.dumps(value)}" for name, value in found.items()))
