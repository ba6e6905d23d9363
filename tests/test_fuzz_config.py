"""The config loader, fuzzed (issue 20): random mutations of valid configs (wrong types,
unknown keys, missing keys and sections, odd numbers, unicode, huge values) either load or
raise the project's own ConfigError naming the mutated key, never another exception."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from uadflows.config import ConfigError, load_plan, read_config

ROOT = Path(__file__).resolve().parents[1]
VALID = {p.name: yaml.safe_load(p.read_text())
         for p in (ROOT / "config.yaml", ROOT / "configs/test/tiny.yaml")}

ODD_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2**63, -(2**63), 10**400 // 10**300, 1e308,
                     -1e308, math.inf, -math.inf, math.nan, 0.5, "", " ", "0", "all", [], {},
                     [None], {"": None}, "x" * 10_000, list(range(1000))]),
    st.integers(), st.floats(), st.text(max_size=40),
    st.lists(st.text(max_size=8), max_size=4),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)
UNICODE_KEYS = st.text(min_size=1, max_size=20).filter(lambda k: k.strip() == k and k)


def _paths(node, prefix=()):
    """Every (path to a value) of a nested config, mappings and lists alike."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _at(node, path):
    for p in path:
        node = node[p]
    return node


@st.composite
def mutated(draw):
    """(config, the key it names, what was done)."""
    name = draw(st.sampled_from(sorted(VALID)))
    config = copy.deepcopy(VALID[name])
    paths = [p for p in _paths(config) if p]
    path = draw(st.sampled_from(paths))
    parent = _at(config, path[:-1])
    keys = [p for p in path if isinstance(p, str)]  # the error may name the key or an
    # enclosing one (a deleted dataset leaves 'datasets' empty: that is the key at fault)
    kind = draw(st.sampled_from(["replace", "delete", "add-key"]))
    if kind == "replace":
        parent[path[-1]] = draw(ODD_VALUES)
    elif kind == "delete":
        del parent[path[-1]]
    else:
        target = parent if isinstance(parent, dict) else config
        new = draw(UNICODE_KEYS.filter(lambda k: k not in target))
        target[new] = draw(ODD_VALUES)
        keys = [new]  # an unknown key must be named itself
    return name, config, keys, kind, path


def _names(message: str, key: str) -> bool:
    return key in message or repr(key)[1:-1] in message  # a control character is escaped


# No shrinking: a failure prints its example as drawn (shrinking one took minutes here).
@settings(max_examples=200, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(case=mutated())
def test_a_mutated_config_loads_or_names_the_key(case, tmp_path_factory):
    name, config, keys, kind, path = case
    file = tmp_path_factory.mktemp("cfg") / name
    file.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    try:
        load_plan(read_config(file), check_roots=False)
    except ConfigError as e:
        assert any(_names(str(e), k) for k in keys), \
            f"{kind} {'.'.join(map(str, path))}: message names none of {keys}: {e}"


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "sweep: [unclosed\n", "\x00\x01", "42\n"])
def test_a_config_that_is_not_a_mapping_names_the_file(tmp_path, text):
    file = tmp_path / "config.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=str(file)):
        load_plan(read_config(file), check_roots=False)
