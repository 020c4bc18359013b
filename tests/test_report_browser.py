"""The report in a real browser: headless Chromium (Debian's chromium + chromium-driver)
renders the page to a PNG with no console errors and every image loaded. .ci/run installs
the browser; on a machine without it the test says why it did not run (in CI it fails)."""

import os
import shutil

import numpy as np
import pytest

from osteo.config import compose
from osteo.report.build import build_report
from tests.test_report import fabricate


def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        why = ("headless Chromium not found: apt-get install chromium chromium-driver "
               "(.ci/run installs them) to run the report's browser test")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2400"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def render(driver, page, png):
    """(images as (src start, loaded), severe console messages) of ``page``; saves a screenshot."""
    driver.get(page.as_uri())
    driver.execute_script("return document.readyState")
    images = driver.execute_script(
        "return Array.from(document.images).map(i => [i.src.slice(0, 40), i.complete && i.naturalWidth > 0])")
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    driver.save_screenshot(str(png))
    return images, severe


def test_report_renders_in_headless_chromium(tmp_path, roi_cache):
    fabricate(tmp_path, np.random.default_rng(0), roi_cache)
    rcfg = compose([], config_name="report").report
    rcfg.gradcam.enabled = False
    build_report(tmp_path / "sweeps", tmp_path / "report", rcfg, "python -m osteo.report")
    rcfg.self_contained = True
    build_report(tmp_path / "sweeps", tmp_path / "single", rcfg, "python -m osteo.report --self-contained")
    (tmp_path / "broken.html").write_text('<html><body><img src="missing.png"></body></html>')
    d = browser()
    try:
        for name in ("report", "single"):
            images, severe = render(d, tmp_path / name / "index.html", tmp_path / f"{name}.png")
            assert len(images) >= 4 and all(ok for _, ok in images), images
            assert not severe, severe
            assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        assert all(src.startswith("data:image/png") for src, _ in render(d, tmp_path / "single" / "index.html",
                                                                          tmp_path / "s2.png")[0])
        # the checks can fail: a page with a missing image is caught
        images, severe = render(d, tmp_path / "broken.html", tmp_path / "broken.png")
        assert images and not images[0][1] and severe
    finally:
        d.quit()
