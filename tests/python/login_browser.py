#!/usr/bin/env python3
"""Drive Tessera's built-in login page in headless Chromium.

authorize → login page → identifier → (a wrong code, then) the right code →
the client's redirect URI with a code. Debian's `chromium` and
`chromium-driver` (/usr/bin/chromedriver), through selenium; no driver is
downloaded. Run by tests/dialect_digilocker.rs, which serves the OTP
webhook (`--otp-url`) and the client's redirect URI; the final URL is
printed as the last line, as JSON.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.parse

try:
    import requests
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as e:  # the Rust test checks first; this is a fallback
    print(f"missing Python package: {e}", file=sys.stderr)
    sys.exit(3)

TIMEOUT = 20


def check(cond, what, detail=""):
    if not cond:
        print(f"FAILED: {what} {detail}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def fetch_otp(otp_url, identifier, not_before):
    """The code delivered for `identifier` after `not_before` (a count of
    earlier deliveries), polled from the test's webhook."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        r = requests.get(otp_url, params={"login": identifier}, timeout=TIMEOUT)
        if r.status_code == 200 and r.json().get("count", 0) > not_before:
            return r.json()["otp"]
        time.sleep(0.1)
    check(False, "the one-time code reached the webhook")


def deliveries(otp_url, identifier):
    r = requests.get(otp_url, params={"login": identifier}, timeout=TIMEOUT)
    return r.json().get("count", 0) if r.status_code == 200 else 0


def submit(driver):
    # The form's primary button: the one without a formaction override.
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]:not([formaction])").click()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--authorize-url", required=True)
    ap.add_argument("--redirect-uri", required=True)
    ap.add_argument("--identifier", required=True)
    ap.add_argument("--otp-url", required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    ap.add_argument("--screenshots", help="directory to save a PNG of each step in")
    args = ap.parse_args()

    profile = tempfile.mkdtemp(prefix="tessera-chromium-")
    opts = Options()
    opts.binary_location = args.chromium
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=800,900",
        f"--user-data-dir={profile}",
    ]:
        opts.add_argument(flag)
    driver = None
    try:
        driver = webdriver.Chrome(options=opts, service=Service(executable_path=args.chromedriver))
        driver.set_page_load_timeout(TIMEOUT)
        wait = WebDriverWait(driver, TIMEOUT)

        def shot(name):
            if args.screenshots:
                driver.save_screenshot(f"{args.screenshots}/{name}.png")

        driver.get(args.authorize_url)
        wait.until(lambda d: d.find_elements(By.ID, "identifier"))
        check("/login?" in driver.current_url, "authorize led to the built-in login page", driver.current_url)
        label = driver.find_element(By.CSS_SELECTOR, "label[for=identifier]")
        check(label.text.strip() != "", "the identifier field has a label")
        shot("1-identifier")

        before = deliveries(args.otp_url, args.identifier)
        driver.find_element(By.ID, "identifier").send_keys(args.identifier)
        submit(driver)
        wait.until(lambda d: d.find_elements(By.ID, "otp"))
        check(
            driver.find_element(By.ID, "otp").get_attribute("autocomplete") == "one-time-code",
            "the code field asks for autocomplete=one-time-code",
        )
        otp = fetch_otp(args.otp_url, args.identifier, before)
        shot("2-otp")

        wrong = f"{(int(otp) + 1) % 1_000_000:06d}"
        driver.find_element(By.ID, "otp").send_keys(wrong)
        submit(driver)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "[role=alert]"))
        alert = driver.find_element(By.CSS_SELECTOR, "[role=alert]").text
        check("4 attempts left" in alert, "a wrong code is reported with the attempts left", alert)
        shot("3-wrong-code")

        driver.find_element(By.ID, "otp").send_keys(otp)
        submit(driver)
        wait.until(lambda d: d.current_url.startswith(args.redirect_uri))
        # The callback page loaded: form-action let the 303 leave the origin.
        wait.until(lambda d: "callback received" in d.page_source)
        shot("4-callback")
        final = driver.current_url
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(final).query))
        check(bool(q.get("code")), "the client got an authorization code", final)
        print(json.dumps({"redirect": final}))
    finally:
        if driver is not None:
            driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
