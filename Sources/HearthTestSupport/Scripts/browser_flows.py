"""Drives real headless Chromium (Selenium + chromedriver) through Hearth's public forms, as a new
user would: sign up, sign out, sign in, set up a device from its label, create the operator from
the one-time link, file a vulnerability report and read its status. Then a page on another origin
posts a form to Hearth and the post must be refused.

Usage: browser_flows.py BASE SETUP_LINK SERIAL SETUP_CODE
Prints one line per step ("ok STEP" or "FAILED STEP: why") and a count of both.
"""
import http.server
import sys
import threading

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

base, setup_link, serial, setup_code = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
results = []


def step(name, check):
    try:
        check()
        results.append(True)
        print(f"ok {name}", flush=True)
    except Exception as error:  # noqa: BLE001 - every failure is reported, not raised
        results.append(False)
        print(f"FAILED {name}: {type(error).__name__}: {str(error)[:400]}", flush=True)


options = Options()
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1024,900"]:
    options.add_argument(flag)
# The deployment's own root CA signs the server certificate; the browser is told to accept it.
options.accept_insecure_certs = True
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
driver.set_page_load_timeout(30)


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

    WebDriverWait(driver, 20).until(gone)


def fill_and_submit(path, fields):
    driver.get(base + path)
    for name, value in fields.items():
        element = driver.find_element(By.NAME, name)
        element.clear()
        element.send_keys(value)
    submit()


def body():
    return driver.find_element(By.TAG_NAME, "body").text


email, password = "ann@example.com", "lantern orbit velvet puzzle"


def sign_up():
    fill_and_submit("/signup", {"email": email, "password": password})
    assert driver.current_url.endswith("/devices"), f"at {driver.current_url}: {body()[:300]}"
    assert "Your devices" in body(), body()[:300]


def sign_out():
    submit("form[action='/signout'] button")
    driver.get(base + "/devices")
    assert driver.current_url.endswith("/signin"), f"still signed in at {driver.current_url}"


def sign_in():
    fill_and_submit("/signin", {"email": email, "password": password})
    assert driver.current_url.endswith("/devices"), f"at {driver.current_url}: {body()[:300]}"


def claim():
    fill_and_submit("/claim", {"serial": serial, "setupCode": setup_code})
    assert driver.current_url.endswith("/devices"), f"at {driver.current_url}: {body()[:300]}"
    assert serial in body(), body()[:300]


def operator():
    driver.delete_all_cookies()
    driver.get(setup_link)
    for name, value in {"email": "op@example.com", "password": "operator passphrase that is long"}.items():
        driver.find_element(By.NAME, name).send_keys(value)
    submit()
    assert "Operator account created" in body(), body()[:300]


def report():
    driver.delete_all_cookies()
    fill_and_submit("/security/report", {"title": "Lock opens on a long press", "description": "Hold the button for ten seconds and the lock opens without a code."})
    text = body()
    errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".error")]
    assert "your report is received" in text, f"{driver.current_url} {errors} {text[:300]}"
    token = driver.find_element(By.CSS_SELECTOR, "main code").text
    fill_and_submit("/security/status", {"token": token})
    assert "Lock opens on a long press" in body() and "Status:" in body(), body()[:300]


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
    attacker_port = server.server_port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        driver.get(f"http://localhost:{attacker_port}/")
        driver.implicitly_wait(0)
        import time
        deadline = time.time() + 10
        while time.time() < deadline and driver.current_url.startswith("http://localhost"):
            time.sleep(0.2)
        text = body()
        assert "cross-site" in text.lower() or "refused" in text.lower(), f"the post was not refused: {driver.current_url} {text[:300]}"
        assert not any(c["name"].startswith("__Host-hearth_session") for c in driver.get_cookies()), "a session cookie was set"
    finally:
        server.shutdown()


try:
    for name, check in [("sign up", sign_up), ("sign out", sign_out), ("sign in", sign_in), ("claim a device", claim),
                        ("create the operator", operator), ("report and status", report), ("cross-site post refused", cross_site)]:
        step(name, check)
finally:
    driver.quit()
print(f"browser steps: {results.count(True)} ok, {results.count(False)} failed", flush=True)
sys.exit(0 if all(results) else 1)
