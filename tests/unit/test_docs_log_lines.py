"""Every log line of the extension quoted in docs/troubleshooting.md is one the code can
write: its message matches a message pattern of bin/ (a string with %-placeholders, an
f-string or a concatenation, each placeholder standing for any text)."""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CODE = REPO / 'bin' / 'user' / 'mqttreplicate'
DOC = REPO / 'docs' / 'troubleshooting.md'
LOG_LINE = re.compile(r'^(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) (user\.mqttreplicate\.\w+): (.*)$')
PLACEHOLDER = re.compile(r'%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdrfixgeEX]')
ANY = '(?:.*)'
ROLE = re.compile(r'^(?:requester|responder|driver|config|status): ')
MIN_LITERAL = 12           # a pattern with less fixed text ('%s: %s') matches anything


def _pattern(node):
    """The regex of a message built by node, or ANY for what is not a string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        parts = PLACEHOLDER.split(node.value.replace('%%', '\0'))
        return ANY.join(re.escape(p).replace('\0', '%') for p in parts)
    if isinstance(node, ast.JoinedStr):
        return ''.join(_pattern(v) if isinstance(v, ast.Constant) else ANY
                       for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _pattern(node.left) + _pattern(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _pattern(node.left)
    return ANY


def code_patterns():
    patterns = set()
    for path in sorted(CODE.glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            if isinstance(node, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                pattern = _pattern(node)
                literal = re.sub(r'\\(.)', r'\1', pattern.replace(ANY, ''))
                if len(literal) >= MIN_LITERAL:
                    patterns.add(pattern)
    return [re.compile(p, re.S) for p in patterns]


def quoted_lines():
    """(line number, message) of each log line of ours in a fenced block of the page."""
    lines, fenced = [], False
    for number, line in enumerate(DOC.read_text(encoding='utf-8').splitlines(), 1):
        if line.startswith('```'):
            fenced = not fenced
            continue
        match = LOG_LINE.match(line.strip()) if fenced else None
        if match:
            lines.append((number, match.group(2)))
    return lines


QUOTED = quoted_lines()
PATTERNS = code_patterns()


def test_the_page_quotes_log_lines():
    assert len(QUOTED) >= 10


@pytest.mark.parametrize('number, message', QUOTED, ids=[str(n) for n, _ in QUOTED])
def test_each_quoted_log_line_exists_in_the_code(number, message):
    candidates = {message, ROLE.sub('', message)}
    assert any(p.fullmatch(c) for p in PATTERNS for c in candidates), \
        'docs/troubleshooting.md line %d quotes a log line the code never writes: %s' \
        % (number, message)


INLINE = re.compile(r'`((?:requester|responder|driver|config): [^`]*)`')


def code_samples():
    """Each message pattern of the code with its placeholders as 'X'."""
    return [p.pattern.replace(ANY, 'X').replace('\\', '') for p in PATTERNS]


def inline_quotes():
    text = re.sub(r'\s+', ' ', DOC.read_text(encoding='utf-8'))
    return sorted(set(INLINE.findall(text)))


@pytest.mark.parametrize('quote', inline_quotes())
def test_each_log_line_quoted_in_the_text_exists_in_the_code(quote):
    """A line quoted in the text, `...` standing for what is left out."""
    as_regex = re.compile('.*'.join(re.escape(p) for p in quote.split('...')))
    assert any(p.fullmatch(quote) for p in PATTERNS) \
        or any(as_regex.fullmatch(sample) for sample in code_samples()), \
        'docs/troubleshooting.md quotes a log line the code never writes: %s' % quote


def test_an_invented_line_is_caught():
    invented = 'requester: weewx/wx_binding: the responder is asleep; waking it up'
    assert not any(p.fullmatch(invented) for p in PATTERNS)
