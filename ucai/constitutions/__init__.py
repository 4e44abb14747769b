"""Constitutions as data: built-in YAML files plus a user folder (settings.constitutions_dir)."""
from ucai.constitutions.loader import (
    ConstitutionError,
    from_public_json,
    load_constitution_file,
    load_constitutions,
)
from ucai.constitutions.schema import Constitution, CritiqueRevisionPair, Demonstration, Principle

__all__ = [
    "Constitution",
    "ConstitutionError",
    "CritiqueRevisionPair",
    "Demonstration",
    "Principle",
    "from_public_json",
    "load_constitution_file",
    "load_constitutions",
]
