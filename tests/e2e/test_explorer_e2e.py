"""The explorer in a real headless Chromium, against a real training localnet.

`make localnet MODEL=tiny`'s network (4 validators, Kubo nodes, validator
workers, a block a second, the KJV GPT as version 0, evaluated) with short
training windows; its explorer is the one `localnet start` runs (Network.explorer_port).
One honest trainer takes round 0 through to version 1. Then Debian's
chromium, driven by selenium through Debian's chromedriver, opens every page
and checks what it shows against the node's own RPC answers: the height, a
transfer's amount, round 0's verdicts, version 1's CID; the header follows new
blocks without a reload; a chat message streams an answer named by version
and CID; the browser console stays free of errors; and when node 0 stops, a
banner says so until it is back.

GRADCHAIN_SCREENSHOTS=docs/images saves the home, round and chat pages there
(the README shows them); by default they go to the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from abci_app import crypto, localnet
from abci_app import tx as txlib
from abci_app.client import ChainClient
from abci_app.keyring import Keyring
from abci_app.ports import free_ports
from tests.e2e.conftest import serve, training_localnet
from tests.e2e.helpers import run_round, training_session

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

APP_STATE = localnet.localnet_app_state(localnet.MODEL_TINY)
# Short windows (a block a second): a submission window of 15 blocks, the rest end early once everyone acted; 4 steps, 2 audited.
APP_STATE["training"]["params"].update({"submission_blocks": 15, "verification_blocks": 40, "reveal_blocks": 15, "dispute_blocks": 20,
                                        "merge_blocks": 30, "steps": 4, "audit_steps": 2})
APP_STATE["staking"]["params"].update({"downtime_window": 1000, "downtime_max_missed": 1000})  # 2 busy cores must not jail anyone
TRAINERS = {"dev1": None}
BOND = 2 * APP_STATE["training"]["params"]["min_trainer_bond"]
ROUND_DEADLINE = 200.0  # seconds for the network's round 0 (bond, submit, audit, merge)
BROWSER_WAIT = 30.0  # seconds any one page may take to show what is checked
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.Network]:
    net = training_localnet(tmp_path_factory.mktemp("explorer-localnet"), "gradchain-explorer-e2e", APP_STATE, localnet.MODEL_TINY,
                            eval_prompts=APP_STATE["training"]["params"]["eval_prompts"])  # as `make localnet`: version 0 evaluated too
    net.explorer_port = free_ports(1)[0]
    net.save()
    yield from serve(net, height=2, poke_first=False, timeout=90)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromedriver are missing: `make install-browser` installs Debian's chromium chromium-driver", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                 "--disable-extensions", "--no-first-run"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(BROWSER_WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("GRADCHAIN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_every_page_in_a_browser_matches_the_node(network: localnet.Network, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    net, driver, shots = network, browser, screenshot_dir(tmp_path)
    # A transfer to a fresh address, and round 0 through to version 1.
    recipient = crypto.PrivateKey(os.urandom(32)).address
    with training_session(net, tmp_path, TRAINERS, ROUND_DEADLINE) as (trainers, chain, timeline):
        sent = chain.send(Keyring(net.keyring_home).get("dev0"), txlib.MsgSend(recipient=recipient, amount=7_777))
        run_round(net, chain, trainers, BOND, timeline, decide_s=150, merge_s=90)
    chain = ChainClient(net.rpc_url(0))
    try:
        check_pages(net, driver, chain, shots, recipient, sent)
    finally:
        chain.close()
    print(f"{timeline}")


def check_pages(net: localnet.Network, driver, chain: ChainClient, shots: Path, recipient: str, sent) -> None:  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base = net.explorer_url
    swapping = (NoSuchElementException, StaleElementReferenceException)  # htmx replaces the body while we look

    def page(path: str):  # type: ignore[no-untyped-def]
        driver.get(base + path)
        assert not driver.find_elements(By.ID, "problem"), f"{path}: {driver.find_element(By.ID, 'problem').text}"
        return driver

    def wait(condition, what: str):  # type: ignore[no-untyped-def]
        return WebDriverWait(driver, BROWSER_WAIT, poll_frequency=0.2, ignored_exceptions=swapping).until(lambda d: condition(d), message=what)

    def attr(css: str, name: str) -> str:
        return driver.find_element(By.CSS_SELECTOR, css).get_attribute(name) or ""

    round0 = chain.query_json("/training/round_detail", "0")
    v1 = chain.query_json("/registry/version", "1")
    assert round0["version"] == 1 and v1 is not None

    # Home: the height the node reports, the round and the version chart; the header follows new blocks without a reload.
    before = chain.rpc.latest_height()
    page("/")
    shown = int(attr("#height", "data-height"))
    assert before <= shown <= chain.rpc.latest_height()
    assert attr("#latest-version", "data-version") == "1"
    wait(lambda d: d.execute_script("return Chart.getChart(document.getElementById('metrics-chart'))?.data.labels.length") == 2, "the loss chart")
    live = wait(lambda d: int(d.find_element(By.ID, "live").get_attribute("data-height") or 0) > shown and d.find_element(By.ID, "live"), "a new block")
    assert "height" in live.text
    wait(lambda d: int(attr("#height", "data-height")) > shown, "the page body to refresh itself")
    driver.save_screenshot(str(shots / "explorer-home.png"))

    # The transfer: its block, its tx page (decoded amount), the recipient's balance.
    page(f"/blocks/{sent.height}")
    assert sent.hash in driver.find_element(By.ID, "block-txs").get_attribute("innerHTML")
    page(f"/txs/{sent.hash}")
    assert driver.find_element(By.CSS_SELECTOR, '#tx-message [data-field="amount"]').text == "7777"
    assert attr("#tx-code", "data-code") == "0"
    page(f"/accounts/{recipient}")
    assert attr("#balance", "data-balance") == str(chain.query_int("/bank/balance", recipient)) == "7777"

    # Round 0: every revealed verdict, per submission and validator, as the node has it.
    page("/rounds/0")
    for sub in round0["submission_list"]:
        rows = driver.find_elements(By.CSS_SELECTOR, f'.submission[data-index="{sub["index"]}"] tr[data-validator]')
        assert sorted((r.get_attribute("data-validator"), r.get_attribute("data-verdict")) for r in rows) == \
            sorted((e["validator"], e["verdict"]) for e in sub["verdicts"])
        assert sub["verdicts"], "round 0 closed without verdicts"
        assert attr(f'.submission[data-index="{sub["index"]}"]', "data-status") == sub["status"]
    assert attr("#round-phase", "data-phase") == "closed"
    twin = httpx.get(f"{base}/api/rounds/0", timeout=BROWSER_WAIT).json()  # the page's JSON twin says the same
    assert [[(e["validator"], e["verdict"], e["measured_error_ppm"]) for e in s["verdicts"]] for s in twin["submissions"]] == \
        [[(e["validator"], e["verdict"], e["measured_error_ppm"]) for e in s["verdicts"]] for s in round0["submission_list"]]
    driver.save_screenshot(str(shots / "explorer-round.png"))

    # Versions: version 1's CID, sha256 and the pull command.
    page("/versions")
    assert driver.find_element(By.CSS_SELECTOR, 'tr[data-version="1"] [data-field="cid"]').text == v1["cid"]
    page("/versions/1")
    assert driver.find_element(By.ID, "version-cid").text == v1["cid"] and driver.find_element(By.ID, "version-sha256").text == v1["sha256"]
    assert driver.find_element(By.ID, "pull-command").text.startswith("gradchain model pull --version 1 --node")

    # Validators: each operator the chain lists, with its power.
    page("/validators")
    for v in chain.query_pages("/staking/validators"):
        assert driver.find_element(By.CSS_SELECTOR, f'tr[data-operator="{v["operator"]}"] [data-field="power"]').text == str(v["power"])

    for path, heading in (("/blocks", "Blocks"), ("/rounds", "Training rounds"), ("/datasets", "Datasets"), ("/proposals", "Proposals"),
                          ("/params", "Parameters")):
        assert page(path).find_element(By.TAG_NAME, "h1").text == heading

    # Chat: an answer streams in, named by the version and CID that gave it (the latest: version 1).
    page("/chat")
    driver.find_element(By.ID, "chat-message").send_keys("In the beginning")
    driver.find_element(By.ID, "chat-send").click()
    answer = wait(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant[data-done]") and d.find_element(By.CSS_SELECTOR, ".msg.assistant"),
                  "a streamed answer")
    assert answer.text.strip() and "error" not in (answer.get_attribute("class") or "")
    who = driver.find_element(By.CSS_SELECTOR, ".who")
    assert (who.get_attribute("data-version"), who.get_attribute("data-cid")) == ("1", v1["cid"])
    driver.save_screenshot(str(shots / "explorer-chat.png"))
    driver.find_element(By.ID, "chat-reset").click()
    wait(lambda d: not d.find_elements(By.CSS_SELECTOR, ".msg"), "the reset to clear the conversation")

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors

    # Node 0 (the explorer's) goes away: a banner says so, polling backs off; it comes back: the banner goes.
    banner = driver.find_element(By.ID, "node-banner")
    assert not banner.is_displayed()
    net.stop_node(0, app=False)
    try:
        wait(lambda d: banner.is_displayed() and "could not answer" in banner.text, "the node-down banner")
        assert "retrying in" in banner.text
    finally:
        net.start_node(0)
    WebDriverWait(driver, 60, poll_frequency=0.5).until(lambda d: not banner.is_displayed(), message="the banner to go once the node is back")
