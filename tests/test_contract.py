"""The contract every registered technique keeps, checked over the registry as it is: a technique added later is
checked here without an edit.

1. Off is the baseline: at its off values (`Param.off`) it trains the baseline's weights bit for bit, under every
   optimizer; a technique with no untreated form changes the model.
2. It builds on every architecture it declares, and is refused on the others.
3. Its searched parameters have search spaces `--tune` can use: inside the allowed range, on a scale that fits, and a
   technique that can be switched off has something to search.
4. `regbench list` shows it with its parameters, and the user guide's table is the registry's.
"""

from pathlib import Path

import numpy as np
import pytest
from helpers import config_for

from regbench.config import ARCHITECTURES, OPTIMIZERS
from regbench.errors import UsageError
from regbench.techniques import BASELINE, TECHNIQUES, check_architecture, hooks_for, resolve_params
from regbench.train import compile_model, train_run

TREATED = [name for name in TECHNIQUES if name != BASELINE]
SHAPES = {"mlp": {"hidden": (16, 8), "train_size": 300}, "cnn": {"hidden": (8,), "train_size": 200}}


def untreated_groups(architecture: str) -> list[tuple[str, dict]]:
    """Return the techniques of `architecture` that have an off form, combined into as few settings as combine
    (two that set one single-valued hook go apart), each with its off values."""
    groups: list[tuple[list[str], dict]] = []
    for name in TREATED:
        technique = TECHNIQUES[name]
        if technique.off_values() is None or architecture not in technique.architectures:
            continue
        for names, values in groups:
            try:
                hooks_for("+".join([*names, name]), tuple(sorted({**values, **technique.off_values()}.items())))
            except UsageError:
                continue
            names.append(name)
            values.update(technique.off_values())
            break
        else:
            groups.append(([name], dict(technique.off_values())))
    return [("+".join(names), values) for names, values in groups]


def trained_weights(config, split):
    result = train_run(config, split)
    return result, [np.array(weight) for weight in result.model.get_weights()]  # before the next run resets it


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_off_trains_the_baselines_weights_bit_for_bit(split, optimizer):
    # every architecture under Adam; the other optimizers on the mlp (a layer-only technique never reaches them)
    for architecture in ARCHITECTURES if optimizer == "adam" else ("mlp",):
        shape = {"architecture": architecture, "optimizer": optimizer, **SHAPES[architecture]}
        baseline, expected = trained_weights(config_for(BASELINE, **shape), split)
        for setting, off in untreated_groups(architecture):
            treated, weights = trained_weights(config_for(setting, off, **shape), split)
            assert len(weights) == len(expected), setting
            assert all(np.array_equal(a, b) for a, b in zip(weights, expected)), (optimizer, setting)
            assert treated.record["test_accuracy"] == baseline.record["test_accuracy"], (optimizer, setting)


def test_a_technique_without_an_off_form_changes_the_model():
    for name in TREATED:
        if TECHNIQUES[name].off_values() is None:
            plain = compile_model(config_for(BASELINE))[0]
            treated = compile_model(config_for(name))[0]
            assert treated.count_params() != plain.count_params() or len(treated.layers) != len(plain.layers), name


@pytest.mark.parametrize("name", TREATED)
def test_it_builds_on_every_architecture_it_declares_and_is_refused_on_the_others(name):
    technique = TECHNIQUES[name]
    for architecture in ARCHITECTURES:
        if architecture in technique.architectures:
            model = compile_model(config_for(name, architecture=architecture, **SHAPES[architecture]))[0]
            assert model.output_shape == (None, 10), (name, architecture)
        else:
            with pytest.raises(UsageError, match=f"--architecture {technique.architectures[0]}"):
                check_architecture([(name,)], architecture)


@pytest.mark.parametrize("name", TREATED)
def test_its_search_spaces_are_ones_tune_can_use(name):
    technique = TECHNIQUES[name]
    searched = [param for param in technique.params if param.search is not None]
    if technique.off_values() is not None:
        assert searched, f"{name} can be switched off but declares nothing for --tune to search"
    for param in searched:
        low, high = param.search
        assert low < high, (name, param.name)
        for end in (low, high):
            assert param.parse(str(param.kind(end))) == end, (name, param.name, end)  # inside the allowed range
        assert param.scale in ("log", "linear"), (name, param.name)
        assert param.scale == "linear" or low > 0, f"{name}: {param.name} is searched on a log scale from {low}"
        assert param.parse(str(param.default)) == param.default  # the default is allowed too
    for param in technique.params:
        if param.off is not None:
            assert param.parse(repr(param.off)) == param.off, (name, param.name)  # off is an allowed value
    values = resolve_params((name,), {})
    assert dict(values) == {param.name: param.default for param in technique.params}


def test_regbench_list_shows_every_technique_with_its_parameters(runner):
    from regbench.cli import cli

    listed = runner.invoke(cli, ["list"])
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    for name, technique in TECHNIQUES.items():
        assert any(line.split()[:1] == [name] for line in lines), name
        for param in technique.params:
            assert any(line.strip().startswith(f"{param.name}=") for line in lines), (name, param.name)


def test_the_user_guide_lists_every_technique_as_the_registry_has_it():
    from regbench.techniques import markdown_table

    page = (Path(__file__).parents[1] / "docs" / "guide" / "techniques.md").read_text()
    block = page.split("(markdown_table); tests/test_contract.py checks it -->\n")[1].split("<!-- end of")[0]
    assert block == markdown_table(), "docs/guide/techniques.md's table is out of date: paste markdown_table() in"
