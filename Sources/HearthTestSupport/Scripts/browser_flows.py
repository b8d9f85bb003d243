"""Drives real headless Chromium (Selenium + chromedriver) through Hearth as its people would, against
a running `hearth demo` (a thermostat and a lock running as reference devices, updated to 1.1.0):

- a new owner signs up, signs out, signs in, sets up a device from its label (a wrong code first);
- the demo owner sees the thermostat's card and page: its reading, a chart, its software update
  and release notes; sends a setpoint from the form and sees the device's answer, then the new
  setpoint arrives on the open page by itself (server-sent events);
- the demo owner sees the lock that misbehaved (demo step 7) quarantined, and why;
- the operator is created from the one-time link, sees the fleet, acknowledges and resolves the
  alert, releases the lock, quarantines it by hand and releases it again, starts, pauses, resumes and
  aborts a rollout, and (once on the security team) moves a report through the workflow;
- a researcher files a report without an account and reads its status and the team's note;
- a page on another origin posts a form to Hearth and the post is refused.

Every page visited is checked with axe-core (0 serious or critical violations), at 375 px wide
(no sideways scrolling), and for CSP violations in the browser's console.

Usage: browser_flows.py BASE SETUP_LINK SERIAL SETUP_CODE OWNER_JSON HEARTH_BINARY DATA_FOLDER
Prints one line per step ("ok STEP" or "FAILED STEP: why") and a count of both.
"""
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

base, setup_link, serial, setup_code, owner_json, hearth, data = sys.argv[1:8]
results = []
visited = set()


def step(name, check):
    try:
        check()
        results.append(True)
        print(f"ok {name}", flush=True)
    except Exception as error:  # noqa: BLE001 - every failure is reported, not raised
        results.append(False)
        print(f"FAILED {name}: {type(error).__name__}: {str(error)[:600]}", flush=True)


options = Options()
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1024,900"]:
    options.add_argument(flag)
# The deployment's own root CA signs the server certificate; the browser is told to accept it.
options.accept_insecure_certs = True
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
driver.set_page_load_timeout(30)


def page_path():
    url = driver.current_url
    return url[len(base):].split("#")[0] if url.startswith(base) else None


def remember():
    path = page_path()
    if path is not None:
        visited.add(path)


def go(path):
    driver.get(base + path)
    remember()


def submit(selector="main form[method=post] button"):
    """Clicks a form's button and waits for the next page."""
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.CSS_SELECTOR, selector).click()

    def gone(_):
        try:
            old.is_enabled()
            return False
        except Exception:  # noqa: BLE001 - stale, or chromedriver's "does not belong to the document"
            return True

    WebDriverWait(driver, 30).until(gone)
    remember()


def fill(fields):
    for name, value in fields.items():
        element = driver.find_element(By.NAME, name)
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)


def fill_and_submit(path, fields, selector="main form[method=post] button"):
    go(path)
    fill(fields)
    submit(selector)


def body():
    return driver.find_element(By.TAG_NAME, "body").text


def sign_out():
    submit("form[action='/signout'] button")


email, password = "ann@example.com", "lantern orbit velvet puzzle"


recovery = {}


def sign_up():
    fill_and_submit("/signup", {"email": email, "password": password})
    # The recovery code is shown once, then on to the devices.
    assert "This is your recovery code" in body(), body()[:300]
    recovery["code"] = driver.find_element(By.CSS_SELECTOR, "code.secret").text
    assert len(recovery["code"]) == 29, recovery
    driver.find_element(By.LINK_TEXT, "Continue to your devices").click()
    WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/devices"))
    remember()
    assert "Your devices" in body(), body()[:300]
    assert "Sign out" in body() and "Sign in\n" not in body(), "the header knows who is signed in"


def sign_out_and_in():
    sign_out()
    go("/devices")
    assert driver.current_url.endswith("/signin"), f"still signed in at {driver.current_url}"
    fill_and_submit("/signin", {"email": email, "password": password})
    assert driver.current_url.endswith("/devices"), f"at {driver.current_url}: {body()[:300]}"


def recover_password():
    global password
    sign_out()
    go("/signin")
    driver.find_element(By.LINK_TEXT, "Forgot your password? Use your recovery code").click()
    WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith("/recover"))
    remember()
    password = "quartz meadow lantern river"
    fill({"email": email, "recoveryCode": recovery["code"].lower(), "newPassword": password})
    submit()
    assert "here is your new recovery code" in body(), body()[:300]
    fill_and_submit("/signin", {"email": email, "password": password})
    assert driver.current_url.endswith("/devices"), f"at {driver.current_url}: {body()[:300]}"


def hand_on():
    go(f"/devices/{serial}")
    driver.find_element(By.LINK_TEXT, "What this device collects, and your choices").click()
    WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith(f"/devices/{serial}/privacy"))
    go(f"/devices/{serial}")
    driver.find_element(By.LINK_TEXT, "Remove, hand on or dispose of this device, or give it a new key").click()
    WebDriverWait(driver, 20).until(lambda d: d.current_url.endswith(f"/devices/{serial}/remove"))
    remember()
    # A new key first (the device is offline: the request waits for its next connection).
    submit(f"form[action='/devices/{serial}/rekey'] button")
    assert "will make a new key" in body(), body()[:400]
    remember()
    go(f"/devices/{serial}/remove")
    driver.find_element(By.CSS_SELECTOR, "form[action$='/transfer'] [name=to]").send_keys("bob@example.com")
    Select(driver.find_element(By.CSS_SELECTOR, "form[action$='/transfer'] [name=history]")).select_by_value("delete")
    submit(f"form[action='/devices/{serial}/transfer'] button")
    assert "is no longer yours" in body() and "Your readings from it are deleted" in body(), body()[:400]
    go("/devices")
    assert serial not in body(), body()[:300]


def claim():
    fill_and_submit("/claim", {"serial": serial, "setupCode": "0000000000"})
    field = driver.find_element(By.NAME, "serial")
    assert field.get_attribute("value") == serial, "the serial typed is kept after an error"
    assert driver.find_elements(By.CSS_SELECTOR, "[role=alert]"), "the error is announced"
    fill({"setupCode": setup_code})
    submit()
    # A claim leads to what the device collects and the owner's choices (all optional ones off).
    assert f"/devices/{serial}/privacy" in driver.current_url, f"at {driver.current_url}: {body()[:300]}"
    assert "Privacy and your choices" in body() and "Optional" in body(), body()[:300]
    remember()
    choice = Select(driver.find_element(By.NAME, "consent-maintenance"))
    assert choice.first_selected_option.get_attribute("value") == "no", "optional purposes start off"
    fill({"consent-maintenance": "yes"})
    submit()
    assert "Your choices are saved" in body(), body()[:300]
    assert "Allowed: Show you the battery level" in body(), body()[:600]
    go(f"/devices/{serial}")
    assert "Hearth Smart Lock L1" in body(), body()[:300]
    assert "What this device collects, and your choices" in body(), body()[:600]
    go("/models/lock-l1/privacy")
    assert "What the Hearth Smart Lock L1 collects, and why" in body() and "30 days, then deleted" in body(), body()[:600]
    go("/devices")
    assert serial in body(), body()[:300]


def owner_sees_thermostat():
    creds = json.load(open(owner_json))
    driver.delete_all_cookies()
    fill_and_submit("/signin", creds)
    cards = driver.find_elements(By.CSS_SELECTOR, ".card")
    assert len(cards) == 2, f"{len(cards)} cards: {body()[:300]}"
    text = body()
    assert "°C" in text and "Online" in text and "version 1.1.0" in text, text[:600]
    link = next(c for c in cards if "Thermostat" in c.text).find_element(By.CSS_SELECTOR, "h2 a")
    link.click()
    WebDriverWait(driver, 20).until(lambda d: "/devices/" in d.current_url)
    remember()
    text = body()
    for part in ["Temperature (°C)", "History", "Updated", "Release notes for 1.1.0", "Fixes a crash", "Security updates until"]:
        assert part in text, f"{part!r} missing: {text[:800]}"
    assert driver.find_elements(By.CSS_SELECTOR, "svg.chart polyline.line"), "a chart with a line"
    visited.add(page_path().split("?")[0] + "/remove")  # checked by axe below


def owner_sees_quarantined_lock():
    """The demo's lock misbehaved (step 7): its owner's page says it is quarantined, why, and what to do."""
    go("/devices")
    link = next(c for c in driver.find_elements(By.CSS_SELECTOR, ".card") if "Lock" in c.text).find_element(By.CSS_SELECTOR, "h2 a")
    link.click()
    WebDriverWait(driver, 20).until(lambda d: "/devices/" in d.current_url)
    remember()
    notice = driver.find_element(By.ID, "quarantine").text
    assert "Quarantined:" in notice and "install updates" in notice, notice
    assert "reach parts of the service that belong to other devices" in body(), body()[:800]


def alerts_and_release():
    """The operator reviews the alert (acknowledge, resolve) and releases the lock from quarantine."""
    go("/console/alerts")
    text = body()
    assert "probe" in text and "high" in text and "open" in text, text[:600]
    serial = driver.find_element(By.CSS_SELECTOR, "main table a[href^='/console/devices/']").text
    submit("form[action^='/console/alerts/'][action$='/acknowledge'] button")
    assert ": acknowledged." in body(), body()[:500]
    submit("form[action^='/console/alerts/'][action$='/resolve'] button")
    assert ": resolved." in body() and "0 open or acknowledged alerts" in body(), body()[:500]
    go(f"/console/devices/{serial}")
    assert "Quarantine" in body() and "automatically" in body(), body()[:800]
    submit("form[action$='/release'] button")
    assert "Released from quarantine" in body(), body()[:500]
    fill({"reason": "We are checking a report about it."})
    submit("form[action$='/quarantine'] button")
    assert "Quarantined:" in body() and "We are checking a report about it." in body(), body()[:800]
    submit("form[action$='/release'] button")
    assert "Released from quarantine" in body(), body()[:500]


def setpoint_and_live_refresh():
    fill({"target": "22.5"})
    submit("form[action$='/commands/setTarget'] button")
    answer = driver.find_element(By.ID, "answer").text
    assert "The device answered: ok" in answer, answer
    # The page stays open: the new setpoint arrives by itself (server-sent events).
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, "[data-field=target]").text == "22.5 °C")
    fill({"target": "99"})
    submit("form[action$='/commands/setTarget'] button")
    error = driver.find_element(By.ID, "f-target-error").text
    assert "between" in error, error
    assert driver.find_element(By.NAME, "target").get_attribute("aria-invalid") == "true"


def operator():
    driver.delete_all_cookies()
    driver.get(setup_link)
    remember()
    fill({"email": "op@example.com", "password": "operator passphrase that is long"})
    submit()
    assert "Operator account created" in body(), body()[:300]
    fill_and_submit("/signin", {"email": "op@example.com", "password": "operator passphrase that is long"})
    go("/console")
    text = body()
    assert "devices match" in text and "Online" in text, text[:500]
    assert "ann@example.com" not in text, "no owner's e-mail in the fleet"
    go("/console/models")
    go("/console/audit")
    assert "Intact: all" in body(), body()[:300]


def rollout():
    go("/console/rollouts")
    fill({"target": "lock-l1-1.0.0.img"})
    submit("form[action='/console/rollouts'] button")
    assert "Started rollout" in body(), body()[:500]
    rollout_id = body().split("Started rollout ")[1].split(" ")[0]
    for action, state in [("pause", "paused"), ("resume", "active"), ("abort", "aborted")]:
        submit(f"form[action='/console/rollouts/{rollout_id}/{action}'] button")
        assert f"now {state}" in body(), f"{action}: {body()[:500]}"
    assert driver.find_elements(By.CSS_SELECTOR, "progress"), "progress bars"


report_token = {}


def researcher_reports():
    driver.delete_all_cookies()
    fill_and_submit("/security/report", {"title": "Lock opens on a long press", "description": "Hold the button for ten seconds and the lock opens without a code."})
    assert "your report is received" in body(), body()[:300]
    report_token["token"] = driver.find_element(By.CSS_SELECTOR, "main code").text
    report_token["id"] = body().split("Tracking id: ")[1].split("\n")[0].strip()


def team_moves_report():
    team = subprocess.run([hearth, "disclosure", "team", "op@example.com", "--data", data], capture_output=True, text=True, timeout=60)
    assert team.returncode == 0, team.stdout + team.stderr
    fill_and_submit("/signin", {"email": "op@example.com", "password": "operator passphrase that is long"})
    go("/console/reports")
    assert report_token["id"] in body(), body()[:300]
    go(f"/console/reports/{report_token['id']}")
    fill({"state": "acknowledged", "note": "Thank you, we can reproduce it."})
    submit("form[action$='/transition'] button")
    assert "Moved to" in body(), body()[:300]


def researcher_reads_status():
    driver.delete_all_cookies()
    fill_and_submit("/security/status", {"token": report_token["token"]})
    text = body()
    assert "Lock opens on a long press" in text and "Thank you, we can reproduce it." in text and "cknowledged" in text, text[:500]


class Attacker(http.server.BaseHTTPRequestHandler):
    """Another origin's page that posts a sign-in form to Hearth as soon as it loads."""

    def do_GET(self):
        page = f"""<!doctype html><html><body><form id=f method=post action="{base}/signin">
<input name=email value="{email}"><input name=password value="{password}"></form>
<script>document.getElementById('f').submit()</script></body></html>"""
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page.encode())

    def log_message(self, *args):
        pass


def cross_site():
    driver.delete_all_cookies()
    server = http.server.HTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        driver.get(f"http://localhost:{server.server_port}/")
        deadline = time.time() + 10
        while time.time() < deadline and driver.current_url.startswith("http://localhost"):
            time.sleep(0.2)
        text = body()
        assert "cross-site" in text.lower() or "refused" in text.lower(), f"the post was not refused: {driver.current_url} {text[:300]}"
        assert not any(c["name"].startswith("__Host-hearth_session") for c in driver.get_cookies()), "a session cookie was set"
    finally:
        server.shutdown()


def axe_script():
    import axe_selenium_python
    folder = os.path.dirname(axe_selenium_python.__file__)
    return open(os.path.join(folder, "node_modules", "axe-core", "axe.min.js")).read()


def every_page_is_accessible_and_fits_375px():
    """Signed in as the operator, the demo owner, then nobody: every page visited above."""
    source = axe_script()
    problems = []
    creds = json.load(open(owner_json))
    sessions = [
        ({"email": "op@example.com", "password": "operator passphrase that is long"}, lambda p: p.startswith("/console")),
        (creds, lambda p: p.startswith("/devices") or p.startswith("/account") or p == "/claim"),
        (None, lambda p: not (p.startswith("/console") or p.startswith("/devices") or p.startswith("/account") or p == "/claim" or p.startswith("/setup/"))),
    ]
    pages = sorted(visited | {"/", "/models", "/security/policy", "/security/acknowledgments", "/account", "/signup", "/signin", "/recover"})
    checked = 0
    for login, wanted in sessions:
        driver.delete_all_cookies()
        if login:
            fill_and_submit("/signin", login)
        for path in [p for p in pages if wanted(p) and "/setup/" not in p]:
            for width in (1024, 375):
                driver.set_window_size(width, 900)
                driver.get(base + path)
                if width == 375:
                    overflow = driver.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                    if overflow > 1:
                        problems.append(f"{path}: {overflow}px sideways scroll at 375px")
                    continue
                driver.execute_script(source)
                result = driver.execute_async_script("var done = arguments[0]; axe.run(document, {resultTypes: ['violations']}).then(done, function (e) { done({error: String(e)}); });")
                if "error" in result:
                    problems.append(f"{path}: axe failed: {result['error']}")
                    continue
                checked += 1
                for v in result["violations"]:
                    if v.get("impact") in ("serious", "critical"):
                        problems.append(f"{path}: {v['impact']} {v['id']}: {v['help']} ({len(v['nodes'])} nodes: {v['nodes'][0]['html'][:120]})")
    driver.set_window_size(1024, 900)
    print(f"axe-core checked {checked} pages", flush=True)
    assert checked >= 15, f"only {checked} pages checked"
    assert not problems, "\n".join(problems)


def no_csp_violations():
    logs = driver.get_log("browser")
    bad = [e["message"] for e in logs if "Content Security Policy" in e.get("message", "") or "Refused to" in e.get("message", "")]
    assert not bad, "\n".join(bad[:10])


try:
    for name, check in [
        ("sign up", sign_up), ("sign out and in", sign_out_and_in),
        ("a forgotten password reset with the recovery code", recover_password),
        ("claim a device (a wrong code first)", claim), ("hand the device on to someone", hand_on),
        ("the demo owner sees reading, chart, update and release notes", owner_sees_thermostat),
        ("a setpoint from the form, the device's answer, live refresh", setpoint_and_live_refresh),
        ("the owner sees the misbehaving lock quarantined", owner_sees_quarantined_lock),
        ("create the operator; fleet, models, audit", operator),
        ("alerts: acknowledge, resolve; quarantine by hand and release", alerts_and_release),
        ("start, pause, resume, abort a rollout", rollout),
        ("a researcher files a report", researcher_reports), ("the security team moves it", team_moves_report),
        ("the researcher reads the status and the note", researcher_reads_status), ("cross-site post refused", cross_site),
        ("no CSP violations", no_csp_violations),
        ("axe-core: 0 serious or critical on every page; 375 px without sideways scroll", every_page_is_accessible_and_fits_375px),
    ]:
        step(name, check)
finally:
    driver.quit()
print(f"browser steps: {results.count(True)} ok, {results.count(False)} failed", flush=True)
sys.exit(0 if all(results) else 1)
