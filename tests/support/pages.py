"""Generated pages for tests: their visible text, and headless Chromium.

    text = page_text(html)                        # what a reader sees, whitespace collapsed
    dom = browse(path, tmp_path)                  # the DOM after the page's scripts ran
    browse(path, tmp_path, screenshot=png)        # ... and a screenshot
    element_text(html, 'stale')                   # the text of the element with that id

Chromium is Debian's `chromium` package (scripts/setup installs it); CHROMIUM is None where
it is missing, and the tests that need it are skipped then. It runs headless, without a
sandbox (the tests run as root), without a GPU and without any network of its own.
"""

import html.parser
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
VOID = {'area', 'base', 'br', 'col', 'embed', 'hr', 'img', 'input', 'link', 'meta',
        'source', 'track', 'wbr'}


class _Text(html.parser.HTMLParser):
    """Collects visible text, per element id too; skips <script>, <style> and hidden
    elements."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.stack = []           # (tag, id, hidden) of the open elements
        self.by_id = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in VOID:
            return
        hidden = 'hidden' in attrs or tag in ('script', 'style', 'head', 'title')
        self.stack.append((tag, attrs.get('id'), hidden))
        if attrs.get('id'):
            self.by_id.setdefault(attrs['id'], [])

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break
        if tag in ('p', 'tr', 'td', 'th', 'h1', 'h2', 'h3', 'section', 'div', 'li'):
            self.handle_data(' ')

    def handle_data(self, data):
        for _, ident, _ in self.stack:
            if ident:
                self.by_id[ident].append(data)
        if not any(hidden for _, _, hidden in self.stack):
            self.parts.append(data)


def _parse(text):
    parser = _Text()
    parser.feed(text)
    parser.close()
    return parser


def squash(text):
    return re.sub(r'\s+', ' ', text).strip()


def page_text(text):
    """The visible text of an HTML page, whitespace collapsed."""
    return squash(''.join(_parse(text).parts))


def element_text(text, ident):
    """The text of the element with id ident (hidden or not), or None if there is none."""
    parts = _parse(text).by_id.get(ident)
    return None if parts is None else squash(''.join(parts))


def is_hidden(text, ident):
    """True if the element with id ident carries the hidden attribute."""
    match = re.search(r'<[^>]*\bid="%s"[^>]*>' % re.escape(ident), text)
    assert match, 'no element with id %r' % ident
    return re.search(r'\shidden(\s|=|>|/)', match.group(0)) is not None


def browse(path, tmp_path, screenshot=None, width=1200, height=640, timeout=60):
    """Open the file at path in headless Chromium; return the DOM after its scripts ran.
    With screenshot (a path), save a PNG of the window too."""
    assert CHROMIUM, 'chromium is not installed (scripts/setup installs it)'
    profile = Path(tmp_path) / 'chromium-profile'
    base = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu',
            '--disable-background-networking', '--disable-component-update', '--disable-sync',
            '--no-first-run', '--hide-scrollbars', '--user-data-dir=%s' % profile,
            '--window-size=%d,%d' % (width, height)]
    url = Path(path).resolve().as_uri()
    dom = subprocess.run(base + ['--dump-dom', url], capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    assert dom.returncode == 0, dom.stderr[-2000:]
    if screenshot is not None:
        shot = subprocess.run(base + ['--screenshot=%s' % Path(screenshot).resolve(), url],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        assert shot.returncode == 0 and Path(screenshot).is_file(), shot.stderr[-2000:]
    return dom.stdout


SKIN_DIR = Path(__file__).resolve().parents[2] / 'skins' / 'Replication'


def render_report(weewx_root, config=None, now=None):
    """The Replication page as WeeWX's CheetahGenerator makes it (the same Cheetah call,
    filter and search list extension), for a station at weewx_root whose configuration
    is config (WEEWX_ROOT filled in). now: the generation time (default: the clock)."""
    import time
    from types import SimpleNamespace
    from unittest import mock

    import Cheetah.Template
    import weewx.cheetahgenerator

    from user.mqttreplicate import report

    config_dict = dict(config or {})
    config_dict['WEEWX_ROOT'] = str(weewx_root)
    generator = SimpleNamespace(config_dict=config_dict)
    with mock.patch.object(report.time, 'time', return_value=now or time.time()):
        search_list = report.ReplicationStatus(generator).get_extension_list(None, None)
    template = Cheetah.Template.Template(file=str(SKIN_DIR / 'index.html.tmpl'),
                                         searchList=search_list, filter='AssureUnicode',
                                         filtersLib=weewx.cheetahgenerator)
    # The skin's encoding, html_entities, as the generator writes the file.
    return template.respond().encode('ascii', 'xmlcharrefreplace').decode('ascii')
