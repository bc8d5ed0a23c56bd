"""An OCSF validator built from the schema's source files (no OCSF server or library here).

It compiles a class the way the OCSF schema does: the class's attributes over its `extends` chain
(detection_finding -> finding -> base_event), profiles pulled in by `$include`, each attribute's
definition from `dictionary.json` overlaid by the class's or object's own (requirement, enum,
type, `"profile": null`), objects likewise over their `extends` chain. Then it checks an event:
- required attributes present, `at_least_one` / `just_one` constraints of objects;
- no attribute the class or object does not define;
- types: the base types' JSON kinds, ranges, `values`, `max_len` and regexes (ip_t, datetime_t,
  uuid_t...), arrays where `is_array`, nested objects recursively;
- enum ids among the compiled enum (observable `type_id`s from every `observable` number in the
  schema), and a sibling caption (`severity` next to `severity_id`) equal to the id's caption;
- attributes that come from a profile only when `metadata.profiles` declares that profile;
- class_uid = category_uid x 1000 + the class's id, type_uid = class_uid x 100 + activity_id.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["OcsfSchema"]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class OcsfSchema:
    def __init__(self, root: Path) -> None:
        self.root = root
        dictionary = self._json("dictionary.json")
        self.dictionary: dict[str, Any] = dictionary["attributes"]
        self.types: dict[str, Any] = dictionary["types"]["attributes"]
        self.categories: dict[str, Any] = self._json("categories.json")["attributes"]
        self.observable_ids = self._observable_ids()

    def _json(self, relative: str) -> Any:
        return json.loads((self.root / relative).read_text())

    def _observable_ids(self) -> dict[str, str]:
        """Observable type ids: every `observable` number a type, attribute or object carries."""
        out: dict[str, str] = {}
        for spec in [*self.types.values(), *self.dictionary.values()]:
            if "observable" in spec:
                out[str(spec["observable"])] = spec["caption"]
        for path in (self.root / "objects").glob("*.json"):
            obj = json.loads(path.read_text())
            if "observable" in obj:
                out[str(obj["observable"])] = obj["caption"]
        return out

    @cache  # noqa: B019 - one schema object per test session
    def _definition(self, kind: str, name: str) -> dict[str, Any]:
        """Attributes and constraints of a class (kind "event") or object, compiled."""
        if kind == "event":
            matches = list((self.root / "events").rglob(f"{name}.json"))
            if len(matches) != 1:
                raise KeyError(f"class {name!r} is not in {self.root}")
            raw = json.loads(matches[0].read_text())
        else:
            path = self.root / "objects" / f"{name}.json"
            if not path.exists():
                raise KeyError(f"object {name!r} is not in {self.root / 'objects'}")
            raw = json.loads(path.read_text())
        parent: dict[str, Any] = {"attributes": {}, "constraints": {}}
        if raw.get("extends") and raw["extends"] != "object":
            parent = self._definition(kind, raw["extends"])
        attributes = copy.deepcopy(parent["attributes"])
        own = dict(raw.get("attributes", {}))
        for include in own.pop("$include", []):
            profile = self._json(include)
            for attr, spec in profile["attributes"].items():
                attributes[attr] = _merge(
                    attributes.get(attr, {}), spec | {"profile": profile["name"]}
                )
        for attr, spec in own.items():
            attributes[attr] = _merge(attributes.get(attr, {}), spec)
        category = raw.get("category") or parent.get("category")
        return {
            "name": raw["name"],
            "caption": raw.get("caption", ""),
            "uid": raw.get("uid", parent.get("uid")),
            "category": category,
            "attributes": attributes,
            "constraints": raw.get("constraints", parent.get("constraints") or {}),
        }

    def _attribute(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        if name not in self.dictionary:
            raise KeyError(f"attribute {name!r} is not in dictionary.json")
        return _merge(self.dictionary[name], spec)

    def validate(self, event: dict[str, Any], class_name: str) -> list[str]:
        """Every problem with `event` as an instance of `class_name`; [] when it is valid."""
        cls = copy.deepcopy(self._definition("event", class_name))
        category = self.categories[cls["category"]]["uid"]
        class_uid = category * 1000 + cls["uid"]
        # As the schema compiles a class: its own ids are the only valid ones, with captions.
        attributes = cls["attributes"]
        activities = self._attribute("activity_id", attributes["activity_id"])["enum"]
        attributes["category_uid"]["enum"] = {
            str(category): {"caption": self.categories[cls["category"]]["caption"]}
        }
        attributes["class_uid"]["enum"] = {str(class_uid): {"caption": cls["caption"]}}
        attributes["type_uid"]["enum"] = {
            str(class_uid * 100 + int(k)): {"caption": f"{cls['caption']}: {v['caption']}"}
            for k, v in activities.items()
        }
        attributes["type_uid"]["sibling"] = "type_name"
        profiles = set(event.get("metadata", {}).get("profiles", []))
        errors = self._object(event, cls, "", profiles)
        if event.get("category_uid") != category:
            errors.append(f"category_uid {event.get('category_uid')} is not {category}")
        if event.get("class_uid") != class_uid:
            errors.append(f"class_uid {event.get('class_uid')} is not {class_uid}")
        if event.get("type_uid") != class_uid * 100 + event.get("activity_id", -1):
            errors.append(f"type_uid {event.get('type_uid')} is not class_uid x 100 + activity_id")
        return errors

    def _object(
        self, value: Any, definition: dict[str, Any], path: str, profiles: set[str]
    ) -> list[str]:
        if not isinstance(value, dict):
            return [f"{path or '.'}: an object ({definition['name']}) expected"]
        errors: list[str] = []
        attributes = definition["attributes"]
        for name, spec in attributes.items():
            if spec.get("profile") and spec["profile"] not in profiles:
                continue  # a profile's attributes apply only where the profile is declared
            if spec.get("requirement") == "required" and name not in value:
                errors.append(f"{path}{name}: required by {definition['name']}")
        constraints = definition["constraints"]
        if "at_least_one" in constraints and not set(constraints["at_least_one"]) & value.keys():
            errors.append(f"{path or '.'}: at least one of {constraints['at_least_one']}")
        if "just_one" in constraints and len(set(constraints["just_one"]) & value.keys()) != 1:
            errors.append(f"{path or '.'}: exactly one of {constraints['just_one']}")
        for name, item in value.items():
            where = f"{path}{name}"
            if name not in attributes:
                errors.append(f"{where}: not an attribute of {definition['name']}")
                continue
            spec = self._attribute(name, attributes[name])
            if spec.get("profile") and spec["profile"] not in profiles:
                errors.append(f"{where}: profile {spec['profile']} not in metadata.profiles")
            if definition["name"] == "observable" and name == "type_id":
                spec["enum"] = spec.get("enum", {}) | {
                    k: {"caption": v} for k, v in self.observable_ids.items()
                }
            errors += self._value(item, spec, where, profiles, value)
        return errors

    def _value(
        self,
        item: Any,
        spec: dict[str, Any],
        where: str,
        profiles: set[str],
        parent: dict[str, Any],
    ) -> list[str]:
        if spec.get("is_array"):
            if not isinstance(item, list):
                return [f"{where}: an array expected"]
            out: list[str] = []
            for n, element in enumerate(item):
                out += self._one(element, spec, f"{where}[{n}]", profiles, parent)
            return out
        return self._one(item, spec, where, profiles, parent)

    def _one(
        self,
        item: Any,
        spec: dict[str, Any],
        where: str,
        profiles: set[str],
        parent: dict[str, Any],
    ) -> list[str]:
        kind = spec["type"]
        if kind == "object" or kind == "json_t":
            return [] if kind == "json_t" or isinstance(item, dict) else [f"{where}: an object"]
        if not kind.endswith("_t"):
            return self._object(item, self._definition("object", kind), f"{where}.", profiles)
        errors = self._scalar(item, kind, where)
        enum = spec.get("enum", {})
        if enum and not errors:
            if str(item) not in enum:
                errors.append(f"{where}: {item!r} is not one of {sorted(enum, key=str)}")
            elif spec.get("sibling") and spec["sibling"] in parent and str(item) != "99":
                caption = enum[str(item)]["caption"]
                if parent[spec["sibling"]] != caption:
                    sibling = spec["sibling"]
                    errors.append(f"{where}: {sibling} {parent[sibling]!r} is not {caption!r}")
        return errors

    def _scalar(self, item: Any, kind: str, where: str) -> list[str]:
        chain = []
        while kind:
            chain.append(kind)
            kind = self.types[kind].get("type", "")
        base = chain[-1]
        ok = {
            "string_t": isinstance(item, str),
            "integer_t": isinstance(item, int) and not isinstance(item, bool),
            "long_t": isinstance(item, int) and not isinstance(item, bool),
            "float_t": isinstance(item, int | float) and not isinstance(item, bool),
            "boolean_t": isinstance(item, bool),
        }.get(base)
        if ok is None:
            return [f"{where}: unknown base type {base}"]
        if not ok:
            return [f"{where}: {item!r} is not a {chain[0]}"]
        errors = []
        for name in chain:
            rules = self.types[name]
            if "regex" in rules and not re.search(rules["regex"], item):
                errors.append(f"{where}: {item!r} does not match {name}")
            if "max_len" in rules and len(item) > rules["max_len"]:
                errors.append(f"{where}: longer than {rules['max_len']} ({name})")
            if "range" in rules and not rules["range"][0] <= item <= rules["range"][1]:
                errors.append(f"{where}: {item} out of {rules['range']} ({name})")
            if "values" in rules and item not in rules["values"]:
                errors.append(f"{where}: {item!r} not in {rules['values']} ({name})")
        if chain[0] == "ip_t" and not errors:
            ipaddress.ip_address(item)
        if chain[0] == "subnet_t":
            try:
                ipaddress.ip_network(item)
            except ValueError:
                errors.append(f"{where}: {item!r} is not a subnet")
        return errors
