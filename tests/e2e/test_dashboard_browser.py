"""A partner's people use the dashboard in a real browser (Debian's Chromium, headless, through
Selenium), with every role of `ere-proxy run` on the embedded PostgreSQL and the clock of each
day (libfaketime).

The operator adds the partner (with its brand colour) and an admin user (CLI, the password on
stdin). In the browser the admin logs in (by keyboard), enrols a customer; the operator links
the customer's charger; while an independent OCPP 1.6 charger (the `ocpp` package) charges
through the proxy, the session appears on the open sessions page without a reload, and the
charger on the overview. The admin runs a MID scan and makes an API key (shown once). After the
quarter, the operator closes it and pays it out; the admin (logged in again: the session ended
meanwhile) reads the quarter's earnings, whose charts carry the figures (asserted), and opens
the statement. Every step leaves a screenshot under the test's tmp_path; with
`UPDATE_SCREENSHOTS=1` they are copied to docs/screenshots/ for the README.

Hand computation (as tests/e2e/test_partner_journey.py): 30 kWh in May 2026 → 9.98 ERE →
€2.99 gross, fee €0.60, net €2.39.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from proxy.ere.core.ean import check_digit
from testkit.dashboard_client import PASSWORD, chart_series
from testkit.headless_chromium import chromium, wait_for
from testkit.ports import free_port
from testkit.postgres import make_data_dir
from testkit.proxy_process import CONFIG, REPO, log_problems
from testkit.system_roles import Roles, charge, wait_for_sessions

pytestmark = pytest.mark.slow

D = Decimal
ADMIN = "admin@laadpunt.example"
SCREENSHOTS = REPO / "docs" / "screenshots"
_local = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-dashboard-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serves(url: str) -> bool:
    try:
        with _local.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until(predicate, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


class Shots:
    """Screenshots of the journey, in order, under `directory`."""

    def __init__(self, driver: WebDriver, directory: Path) -> None:
        self.driver, self.directory = driver, directory
        directory.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> None:
        """The whole page (the window stretched to it, at most 2400 pixels high)."""
        size = self.driver.get_window_size()
        self.driver.execute_script("window.scrollTo(0, 0);")
        height = self.driver.execute_script("return document.documentElement.scrollHeight;")
        self.driver.set_window_size(size["width"], min(max(height, size["height"]), 2400))
        try:
            assert self.driver.save_screenshot(str(self.directory / f"{name}.png"))
        finally:
            self.driver.set_window_size(size["width"], size["height"])

    def publish(self) -> None:
        """Copy them to docs/screenshots/ when asked to (UPDATE_SCREENSHOTS=1)."""
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            for shot in sorted(self.directory.glob("*.png")):
                shutil.copyfile(shot, SCREENSHOTS / shot.name)


def log_in(driver: WebDriver, base: str) -> None:
    """Log in as the admin with the keyboard only: the skip link, the labels, Enter."""
    driver.get(f"{base}/dashboard/login")
    email = driver.switch_to.active_element  # the field has autofocus
    assert email.get_attribute("id") == "email"
    email.send_keys(ADMIN, Keys.TAB)
    password = driver.switch_to.active_element
    assert password.get_attribute("id") == "password"
    password.send_keys(PASSWORD, Keys.ENTER)
    wait_for(driver, lambda d: d.current_url.endswith("/dashboard"))


def assert_accessible_basics(driver: WebDriver) -> None:
    """Every visible control has a label (or a name), and the skip link reaches the content."""
    unnamed = driver.execute_script(
        "return Array.from(document.querySelectorAll('input, select, textarea, button'))"
        ".filter(e => e.type !== 'hidden')"
        ".filter(e => !(e.labels && e.labels.length) && !e.textContent.trim()"
        " && !e.getAttribute('aria-label')).map(e => e.outerHTML);"
    )
    assert unnamed == []
    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    skip = driver.switch_to.active_element
    assert skip.text == "Skip to content"
    skip.send_keys(Keys.ENTER)
    assert driver.switch_to.active_element.get_attribute("id") == "main"


def test_a_partner_uses_the_dashboard_from_log_in_to_statement(
    tmp_path: Path, data_dir: Path
) -> None:
    api_port = free_port()
    roles = Roles(
        tmp_path / "proxy.toml", free_port(), free_port(), free_port(), free_port(),
        tmp_path / "run.stderr",
    )  # fmt: skip
    template = CONFIG.replace("[capture]\nenabled = false\n", "[capture]\nenabled = true\n")
    template += (
        f'\n[database]\ndata_dir = "{data_dir}"\n'
        f"\n[ere]\nworkers = 1\nadmin_port = {roles.worker_admin}\npoll_interval = 0.2\n"
        'payout_minimum = "1.00"\n'
        f'payout_dir = "{tmp_path / "payouts"}"\nstatement_dir = "{tmp_path / "statements"}"\n'
        'debtor_name = "ERE Provider BV"\ndebtor_iban = "NL91ABNA0417164300"\n'
        'debtor_bic = "ABNANL2A"\nprovider_name = "ERE Provider BV"\n'
        'provider_address = "Stationsplein 1, 3511 ED Utrecht"\nprovider_kvk = "12345678"\n'
        'provider_vat_number = "NL123456789B01"\nprovider_nea_account = "NEA-000123"\n'
        f'\n[api]\nenabled = true\nhost = "127.0.0.1"\nport = {api_port}\n'
        "dashboard_secure_cookie = false\n"
    )
    roles.config.write_text(
        template.format(
            port=roles.port, admin_port=roles.admin_port, upstream_port=roles.upstream_port
        )
    )
    base = f"http://127.0.0.1:{api_port}"
    ean = "87168712000000021"
    ean += str(check_digit(ean))
    may, july = "2026-05-04 09:00:00", "2026-07-10 09:00:00"

    with chromium() as driver:
        shots = Shots(driver, tmp_path / "screenshots")

        # -- 4 May: the operator adds the partner and its admin; the admin enrols a customer.
        with roles.on(may) as op:
            op.run("partners", "add", "P1", "--name", "Laadpunt & Co", "--kind", "installer",
                   "--payout-model", "direct", "--colour", "#6A1B9A")  # fmt: skip
            op.run("partners", "users", "add", "P1", ADMIN, "--role", "admin",
                   stdin=PASSWORD + "\n")  # fmt: skip
            assert ADMIN in op.run("partners", "users", "list", "P1")
            wait_until(lambda: serves(f"{base}/dashboard/login"), "the dashboard did not start")

            driver.get(f"{base}/dashboard/login")
            shots.take("01-login")
            log_in(driver, base)
            assert driver.find_element(By.CLASS_NAME, "brand-name").text == "Laadpunt & Co"
            assert_accessible_basics(driver)

            driver.get(f"{base}/dashboard/customers")
            form = driver.find_element(By.ID, "enrol-form")
            for field, value in {
                "f-name": "Anna de Vries", "f-email": "anna@example.nl",
                "f-address": "Kerkstraat 1", "f-postcode": "1234 AB", "f-city": "Utrecht",
                "f-ean": ean, "f-grid_operator": "Stedin", "f-iban": "NL91ABNA0417164300",
                "f-consent_text_version": "v3", "f-consent_reference": "signed form 17",
            }.items():  # fmt: skip
                form.find_element(By.ID, field).send_keys(value)
            form.find_element(By.NAME, "consent_given").click()
            shots.take("02-enrol")
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            customer_id = wait_for(driver, lambda d: d.find_element(By.ID, "customer-id")).text
            assert driver.find_element(By.ID, "customer-state").text == "Enrolled for 2026"
            shots.take("03-customer")

            op.run("links", "add", "CP-ANNA", "--customer", customer_id, "--max-power-w", "11000",
                   "--from", "2026-05-04T00:00:00+02:00")  # fmt: skip

            driver.get(f"{base}/dashboard/sessions")
            assert driver.find_elements(By.CSS_SELECTOR, "#session-list tr[data-session]") == []
            driver.execute_script("window.stillTheSamePage = true;")
            charging = threading.Thread(
                target=asyncio.run,
                args=(charge(roles, [("CP-ANNA", "2026-05-04T00:30:00+00:00", "30")]),),
            )
            charging.start()
            row = wait_for(
                driver,
                lambda d: d.find_elements(By.CSS_SELECTOR, "#session-list tr[data-session]"),
            )[0]
            charging.join(120)
            assert not charging.is_alive()
            assert driver.execute_script("return window.stillTheSamePage === true;")
            assert "CP-ANNA" in row.text and customer_id in row.text
            wait_for(
                driver,
                lambda d: (
                    "completed"
                    in d.find_element(
                        By.CSS_SELECTOR, "#session-list tr[data-session] .status"
                    ).text
                ),
            )
            shots.take("04-sessions-live")
            wait_for_sessions(data_dir, 1)

            driver.get(f"{base}/dashboard")
            charger = driver.find_element(By.CSS_SELECTOR, 'tr[data-charger="CP-ANNA"]')
            assert charger.find_element(By.CLASS_NAME, "connected").text in (
                "Connected",
                "Charging",
            )
            verdict = charger.find_element(By.CLASS_NAME, "verdict")
            assert verdict.get_attribute("data-verdict") == "needs_check"
            assert "Iskra WM3M4" in charger.text
            shots.take("05-overview")
            driver.set_window_size(390, 844)
            shots.take("06-overview-phone")
            driver.set_window_size(1100, 820)

            driver.get(f"{base}/dashboard/scans")
            driver.find_element(By.ID, "all-chargers").click()
            driver.find_element(By.ID, "portfolio").send_keys(",ABB B23 112-100,SN-77,2500")
            driver.find_element(By.CSS_SELECTOR, "#scan-form button[type=submit]").click()
            wait_for(driver, lambda d: d.find_elements(By.ID, "scan-items"))
            items = driver.find_elements(By.CSS_SELECTOR, "#scan-items tbody tr")
            found = [
                (i.get_attribute("data-identity"), i.get_attribute("data-verdict")) for i in items
            ]
            assert ("CP-ANNA", "needs_check") in found and len(found) == 2
            shots.take("07-mid-scan")

            driver.get(f"{base}/dashboard/keys")
            for scope in ("customers:read", "sessions:read"):
                driver.find_element(By.CSS_SELECTOR, f'input[value="{scope}"]').click()
            driver.find_element(By.CSS_SELECTOR, "#create-key button[type=submit]").click()
            key = wait_for(driver, lambda d: d.find_element(By.ID, "new-key-value"))
            secret = key.get_attribute("value")
            assert secret.startswith("ere_")
            shots.take("11-api-keys")
            driver.get(f"{base}/dashboard/keys")
            assert secret not in driver.page_source and secret[4:16] in driver.page_source

        # -- 10 July: the quarter is closed and paid; the admin reads earnings and statement.
        with roles.on(july) as op:
            op.run("quarter", "close", "2026Q2", "--wait")
            op.run("payout", "run", "2026Q2", "--wait")
            wait_until(lambda: serves(f"{base}/dashboard/login"), "the dashboard did not start")
            driver.get(f"{base}/dashboard")
            assert driver.current_url.endswith("/dashboard/login")  # the session has ended
            log_in(driver, base)

            driver.get(f"{base}/dashboard/earnings?quarter=2026Q2")
            page = driver.page_source
            months = {label: D(value) for label, value in chart_series(page, "months-kwh")}
            assert months == {"2026-04": D(0), "2026-05": D(30), "2026-06": D(0)}
            ere = {label: D(value) for label, value in chart_series(page, "months-ere")}
            assert ere == {"2026-04": D(0), "2026-05": D("9.98"), "2026-06": D(0)}
            assert [(n, D(v)) for n, v in chart_series(page, "customers")] == [
                ("Anna de Vries", D("2.39"))
            ]
            assert driver.find_element(By.ID, "total-net").text == "€ 2.39"
            assert driver.find_element(By.ID, "total-fee").text == "€ 0.60"
            bars = driver.find_elements(By.CSS_SELECTOR, "#chart-months-kwh rect.bar")
            assert [float(b.get_attribute("height")) > 0 for b in bars] == [False, True, False]
            shots.take("08-earnings")

            driver.get(f"{base}/dashboard/statements?quarter=2026Q2")
            statement = driver.find_element(By.CSS_SELECTOR, "tr[data-statement]")
            assert statement.find_element(By.CLASS_NAME, "payout").text.startswith("paid")
            shots.take("09-statements")
            statement.find_element(By.CLASS_NAME, "statement-html").click()
            wait_for(driver, lambda d: "Anna de Vries" in d.page_source)
            assert "2,39" in driver.page_source  # the customer's statement, in Dutch
            shots.take("10-statement")
        shots.publish()

    assert log_problems(roles.log.read_text()) == []
