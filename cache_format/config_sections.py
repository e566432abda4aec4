"""Strict YAML -> dataclass loading, the one loader of every stage's config.

A config is a YAML mapping of sections; each section is a mapping of keys that are the fields of
one dataclass (which validates its values in `__post_init__`). An unknown section or key is an
error naming it and listing the known ones: a typo never silently takes a default.

    data = read_yaml_mapping(path, "train config", "configs/train/")
    apply_overrides(data, ["grpo.beta=0"])                 # `section.key=value`, YAML values
    sections = build_sections({"grpo": GRPOConfig, ...}, data, str(path))

Hand-written rather than pydantic / dacite on purpose: the core install (a team that only reads
caches) needs no extra dependency, the dataclasses keep their own validation, and the messages
keep their wording (what the key is, where, and which keys exist).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml


def read_yaml_mapping(path: str | Path, what: str, examples: str) -> dict[str, Any]:
    """The top-level mapping of a YAML config file ({} for an empty file).

    Args:
        path: the YAML file.
        what: what it is, for the messages ("train config").
        examples: where example files live ("configs/train/").

    Raises:
        FileNotFoundError: no such file (the message points at the examples).
        ValueError: the top level is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found; see {examples} for examples")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level, got "
                         f"{type(data).__name__}")
    return data


def check_keys(cls: type, data: Any, section: str, where: str) -> dict[str, Any]:
    """The mapping of one section, its keys checked against the dataclass's fields.

    Raises:
        ValueError: the section is not a mapping, or a key is not a field of `cls`.
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: config section {section!r} must be a mapping, got "
                         f"{type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r} in config section {section!r}; "
                             f"known keys are {sorted(known)}")
    return dict(data)


def build_section(cls: type, data: Any, section: str, where: str = "config"):
    """An instance of the section's dataclass from its mapping (None: all defaults)."""
    return cls(**check_keys(cls, data, section, where))


def check_sections(sections: dict[str, type] | list[str], data: dict[str, Any], where: str,
                   note: str = "") -> None:
    """Raise ValueError naming the first section of `data` that is not in `sections`."""
    for name in data:
        if name not in sections:
            raise ValueError(f"{where}: unknown section {name!r}; known sections are "
                             f"{sorted(sections)}{note}")


def build_sections(sections: dict[str, type], data: dict[str, Any], where: str
                   ) -> dict[str, Any]:
    """{section name: dataclass instance} for the sections `data` gives (strict, see above)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of sections, got {type(data).__name__}")
    check_sections(sections, data, where)
    return {name: build_section(sections[name], value, name, where)
            for name, value in data.items()}


def parse_override(text: str) -> tuple[str, str, Any]:
    """`section.key=value` -> (section, key, YAML-parsed value)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form section.key=value")
    lhs, rhs = text.split("=", 1)
    if lhs.count(".") != 1:
        raise ValueError(f"override {text!r}: the key must be section.key, e.g. grpo.beta=0")
    section, key = lhs.split(".")
    return section, key, yaml.safe_load(rhs) if rhs else None


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]
                    ) -> set[tuple[str, str]]:
    """Set each `section.key=value` in `data` (sections copied first); returns the (section,
    key) pairs given."""
    given = set()
    for name, value in list(data.items()):
        if isinstance(value, dict) or value is None:
            data[name] = dict(value or {})
    for text in overrides:
        section, key, value = parse_override(text)
        data.setdefault(section, {})[key] = value
        given.add((section, key))
    return given
