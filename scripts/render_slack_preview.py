"""Render the Slack message the notifier produces for a sample scan to docs/slack-message.png.

The message is the real one: the sample enhanced scan (events/findings/enhanced-scan-findings.json) is
summarised and rendered by logic/notify.py under the bundled rules file; its Block Kit is then drawn as
Slack draws it (an HTML approximation) and screenshotted with headless Chromium.

    .venv/bin/python scripts/render_slack_preview.py        # needs Debian's chromium (apt-get install chromium)
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "functions"))

from ecr_automation.config import BUNDLED_RULES_FILE  # noqa: E402
from ecr_automation.logic import notify  # noqa: E402
from ecr_automation.models.domain import RepositoryRef  # noqa: E402
from ecr_automation.models.findings import Finding, Message, ScannedImage  # noqa: E402
from ecr_automation.rules import NotifyRule, load_rules  # noqa: E402

SAMPLE = ROOT / "events" / "findings" / "enhanced-scan-findings.json"
OUTPUT = ROOT / "docs" / "slack-message.png"
# Slack draws its own emoji; here they are drawn with CSS, so no emoji font is needed.
EMOJI = {
    ":red_circle:": '<span class="dot" style="background:#dd2e44"></span>',
    ":large_orange_circle:": '<span class="dot" style="background:#f4900c"></span>',
    ":large_yellow_circle:": '<span class="dot" style="background:#fdcb58"></span>',
    ":large_blue_circle:": '<span class="dot" style="background:#55acee"></span>',
    ":white_circle:": '<span class="dot" style="background:#e6e7e8"></span>',
    ":white_check_mark:": '<span class="dot" style="background:#77b255"></span>',
    ":warning:": '<span class="dot" style="background:#ffcc4d"></span>',
    ":rotating_light:": '<span class="dot" style="background:#dd2e44"></span>',
}
STYLE = """
body { margin: 0; background: #fff; font: 15px/1.46668 -apple-system, 'Segoe UI', 'DejaVu Sans', sans-serif;
       color: #1d1c1d; }
.message { display: flex; padding: 12px 20px; width: 760px; }
.avatar { width: 36px; height: 36px; border-radius: 6px; background: #ff9900; color: #fff; font-weight: 700;
          display: flex; align-items: center; justify-content: center; margin-right: 8px; flex: none; }
.name { font-weight: 900; } .app { background: #e8e8e8; color: #616061; font-size: 10px; padding: 1px 3px;
        border-radius: 2px; margin: 0 4px; } .time { color: #616061; font-size: 12px; }
.header { font-size: 18px; font-weight: 900; margin: 6px 0 4px; }
.section { margin: 4px 0; } .fields { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 16px; margin: 6px 0; }
.divider { border-top: 1px solid #ddd; margin: 10px 0; } .context { color: #616061; font-size: 12px; margin: 6px 0; }
a { color: #1264a3; text-decoration: none; }
.dot { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; vertical-align: -0.05em; }
code { color: #e01e5a; background: #f8f8f8; border: 1px solid #e8e8e8; border-radius: 3px; padding: 0 3px;
       font: 12px Monaco, 'DejaVu Sans Mono', monospace; }
"""


def sample_message() -> Message:
    response = json.loads(SAMPLE.read_text())
    findings = [Finding.from_enhanced(raw) for raw in response["imageScanFindings"]["enhancedFindings"]]
    repository = RepositoryRef(response["registryId"], "us-east-1", response["repositoryName"])
    rule = load_rules(BUNDLED_RULES_FILE).notify_for(repository.name) or NotifyRule()
    report = notify.summarize(findings, rule, today=date(2026, 11, 29))
    image = ScannedImage(repository, response["imageId"]["imageDigest"], (response["imageId"]["imageTag"],))
    return notify.render_scan(report, image, scanner=notify.SCANNER_ENHANCED)


def mrkdwn(text: str) -> str:
    """Slack's mrkdwn as HTML. The text arrives escaped (&amp; &lt; &gt;), as Slack receives it."""
    for name, glyph in EMOJI.items():
        text = text.replace(name, glyph)
    text = re.sub(r"<(https?://[^|>]+)\|([^>]+)>", r'<a href="\1">\2</a>', text)
    text = re.sub(r"<(https?://[^|>]+)>", r'<a href="\1">\1</a>', text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])", r"<b>\1</b>", text)
    text = re.sub(r"(?<![\w_])_([^_\n]+)_(?![\w_])", r"<i>\1</i>", text)
    return text.replace("\n", "<br>").replace("      ", "&emsp;&emsp;")


def block_html(block: dict[str, Any]) -> str:
    kind = block["type"]
    if kind == "header":
        text = html.escape(block["text"]["text"])
        for name, glyph in EMOJI.items():
            text = text.replace(name, glyph)
        return f'<div class="header">{text}</div>'
    if kind == "divider":
        return '<div class="divider"></div>'
    if kind == "context":
        return '<div class="context">' + " ".join(mrkdwn(element["text"]) for element in block["elements"]) + "</div>"
    parts = []
    if "text" in block:
        parts.append(f'<div class="section">{mrkdwn(block["text"]["text"])}</div>')
    if "fields" in block:
        parts.append(
            '<div class="fields">' + "".join(f"<div>{mrkdwn(f['text'])}</div>" for f in block["fields"]) + "</div>"
        )
    return "".join(parts)


def page(message: Message) -> str:
    blocks = "".join(block_html(block) for block in message.blocks)
    return (
        f"<!doctype html><meta charset='utf-8'><style>{STYLE}</style><div class='message'><div class='avatar'>ECR</div>"
        "<div><span class='name'>ecr-automation</span><span class='app'>APP</span>"
        f"<span class='time'>12:04</span>{blocks}</div></div>"
    )


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("render_slack_preview: chromium is missing: apt-get install chromium", file=sys.stderr)
        return 1
    message = sample_message()
    with tempfile.TemporaryDirectory() as workdir:
        document = Path(workdir) / "message.html"
        document.write_text(page(message), encoding="utf-8")
        lines = sum(block.get("text", {}).get("text", "").count("\n") + 1 for block in message.blocks)
        height = 120 + 22 * lines + 14 * len(message.blocks)
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={workdir}/profile",
                f"--window-size=800,{height}",
                f"--screenshot={OUTPUT}",
                document.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(message.blocks)} blocks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
