"""The configurations of docs/topologies.md, read from the page, for the tests that run them.

Each configuration the page shows stands between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` as one fenced block:

    documented_block('bridge-example')            # the text inside the fence
    documented_stanza('chain-tertiary', host='127.0.0.1', port=1234)
                                                  # its [Replicator], as a dict, with the
                                                  # documented host (and port) replaced
    documented_config('several-primaries-secondary')['DataBindings']   # other sections

The tests replace only where things are (hosts, ports, certificate files) and options that
make a test quicker (reconnection delays); everything else is the page's text.
"""

import io
from pathlib import Path

import configobj

DOC = Path(__file__).resolve().parents[2] / 'docs' / 'topologies.md'


def documented_block(name, doc=DOC):
    """The text of the fenced block between the markers `name` in docs/topologies.md."""
    text = Path(doc).read_text(encoding='utf-8')
    begin, end = '<!-- %s:begin -->' % name, '<!-- %s:end -->' % name
    assert text.count(begin) == 1 and text.count(end) == 1, \
        'markers %s missing (or repeated) in %s' % (name, doc)
    lines = text.split(begin)[1].split(end)[0].strip().splitlines()
    assert lines[0].startswith('```') and lines[-1] == '```', \
        'no fenced block between the markers %s' % name
    return '\n'.join(lines[1:-1]) + '\n'


def _plain(section):
    """A configobj section as nested dicts of strings."""
    return {k: (_plain(v) if isinstance(v, dict) else v) for k, v in section.items()}


def documented_config(name):
    """The whole documented weewx.conf block `name`, as nested dicts."""
    return _plain(configobj.ConfigObj(io.StringIO(documented_block(name)), interpolation=False))


def documented_stanza(name, *, stanza='Replicator', replace=None, **connection):
    """The [stanza] of the documented weewx.conf block `name`, as nested dicts.

    connection: options set in [stanza] itself (host, port, max_delay, ...); each must
    replace one the page shows or add one it leaves at its default. replace: {section path
    (tuple of names below the stanza): {option: value}} for options in sub-sections (e.g.
    {('Responder',): {'host': ..., 'port': ...}}); each option named must be on the page."""
    config = documented_config(name)
    assert stanza in config, 'the block %s has no [%s]' % (name, stanza)
    top = config[stanza]
    assert 'host' in top, 'the block %s sets no host to replace' % name
    top.update({k: str(v) for k, v in connection.items()})
    for path, values in (replace or {}).items():
        section = top
        for part in path:
            section = section[part]
        for option, value in values.items():
            assert option in section, 'the block %s has no %s in [%s]' % (
                name, option, ']['.join(path))
            if isinstance(value, dict):
                section[option].update({k: str(v) for k, v in value.items()})
            else:
                section[option] = str(value)
    return top
