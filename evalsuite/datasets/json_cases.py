"""Generated JSON-extraction cases: a text, the JSON Schema of the answer and the
gold object, in four families (``resume_en``, ``resume_zh``, ``order``, ``event``).

Each family has a generator ``(random.Random) -> (text, gold)`` in
:data:`GENERATORS` and a schema in :data:`SCHEMAS`. Schemas are bounded
(``maxItems``, ``maxLength``, ``maximum``) so constrained decoding cannot repeat
list items forever. Used by :mod:`tasks.json_extraction`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from evalsuite.scoring import json_format as jf

FAMILIES = ("resume_en", "resume_zh", "order", "event")

# --- Schemas ------------------------------------------------------------------

_NAME = {"type": "string", "maxLength": 60}

RESUME_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "name": _NAME,
        "phone": {"type": "string", "maxLength": 30},
        "email": {"type": "string", "format": "email"},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 30},
                   "minItems": 1, "maxItems": 6, jf.UNORDERED: True},
        "experience_years": {"type": "integer", "minimum": 0, "maximum": 60},
    },
    "required": ["name", "phone", "email", "skills", "experience_years"],
    "additionalProperties": False,
}

CURRENCIES = ("USD", "EUR", "GBP", "CNY", "JPY")

ORDER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "maxLength": 20},
        "customer": _NAME,
        "currency": {"enum": list(CURRENCIES)},
        "items": {
            "type": "array", "minItems": 1, "maxItems": 5, jf.UNORDERED: True,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 40},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "unit_price": {"type": "number", "minimum": 0, "maximum": 100000},
                },
                "required": ["name", "quantity", "unit_price"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["order_id", "customer", "currency", "items"],
    "additionalProperties": False,
}

EVENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 80},
        "start_date": {"type": "string", "format": "date"},
        "end_date": {"type": "string", "format": "date"},
        "location": {
            "type": "object",
            "properties": {"venue": _NAME, "city": _NAME, "country": _NAME},
            "required": ["city", "country"],
            "additionalProperties": False,
        },
        "organizer": _NAME,
    },
    "required": ["title", "start_date", "location"],
    "additionalProperties": False,
}

SCHEMAS = {"resume_en": RESUME_SCHEMA, "resume_zh": RESUME_SCHEMA, "order": ORDER_SCHEMA, "event": EVENT_SCHEMA}

# --- Case generators ------------------------------------------------------------

_EN_FIRST = ("Maria", "James", "Aisha", "Tom", "Priya", "Lucas", "Sofia", "Daniel", "Chen", "Olga", "Kwame", "Emma")
_EN_LAST = ("Lopez", "Smith", "Khan", "Novak", "Patel", "Silva", "Rossi", "Brown", "Wu", "Ivanova", "Mensah", "Berg")
_EN_SKILLS = ("Python", "SQL", "Docker", "Java", "Rust", "React", "Terraform", "Spark", "Go", "Kubernetes",
              "TypeScript", "PostgreSQL", "AWS", "Linux")
_EN_ROLES = ("backend development", "data engineering", "frontend development", "DevOps", "machine learning")
_EN_TEMPLATES = (
    "{name} can be reached at {phone} or {email}. Skilled in {skills}, with {years} years of experience in {role}.",
    "Candidate: {name}. Phone: {phone}. Email: {email}. {years} years of {role}; main skills are {skills}.",
    "With {years} years in {role}, {name} ({email}, tel. {phone}) works mostly with {skills}.",
)

_ZH_NAMES = ("李娜", "王伟", "张敏", "刘洋", "陈静", "杨磊", "赵丽", "黄强", "周杰", "吴芳")
_ZH_PINYIN = {"李娜": "lina", "王伟": "wangwei", "张敏": "zhangmin", "刘洋": "liuyang", "陈静": "chenjing",
              "杨磊": "yanglei", "赵丽": "zhaoli", "黄强": "huangqiang", "周杰": "zhoujie", "吴芳": "wufang"}
_ZH_ROLES = ("后端开发", "前端开发", "数据分析", "运维", "算法")
_ZH_TEMPLATES = (
    "{name}，手机 {phone}，邮箱 {email}。熟悉 {skills}，有 {years} 年{role}经验。",
    "求职者{name}，{years} 年{role}经验，擅长 {skills}。联系电话 {phone}，电子邮箱 {email}。",
)
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")

_PRODUCTS = ("notebook", "pen", "stapler", "desk lamp", "USB cable", "coffee mug", "backpack", "monitor stand",
             "keyboard", "water bottle")
_CUSTOMERS = ("Greenleaf Café", "Northwind Traders", "Blue Harbor Ltd", "Atlas Robotics", "Maple & Co",
              "Sunrise Bakery", "Orbit Labs")
_CURRENCY_WORDS = {"USD": "US dollars", "EUR": "euros", "GBP": "pounds sterling", "CNY": "yuan", "JPY": "yen"}
_ORDER_TEMPLATES = (
    "Order {order_id} from {customer}: {items}. All prices in {currency_words}.",
    "{customer} placed order {order_id} ({currency}): {items}.",
)

_EVENT_KINDS = ("Robotics Meetup", "Data Science Summit", "Open Source Day", "Climate Tech Forum", "Poetry Night",
                "Startup Pitch Evening")
_EVENT_ADJ = ("Spring", "Autumn", "Annual", "Northern", "Community", "Winter")
_PLACES = (("Lisbon", "Portugal"), ("Nairobi", "Kenya"), ("Osaka", "Japan"), ("Toronto", "Canada"),
           ("Krakow", "Poland"), ("Lyon", "France"), ("Chengdu", "China"), ("Austin", "United States"))
_VENUES = ("Hall B", "City Library", "Riverside Convention Center", "Room 204", "Old Market Hall")
_ORGS = ("Tech Guild", "OpenLab Foundation", "University Robotics Club", "Civic Hub")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def _join_en(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _join_zh(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else "、".join(parts[:-1]) + " 和 " + parts[-1]


def resume_zh_text(name: str, phone: str, email: str, skills: Sequence[str], years: int, role: str,
                   template: int = 0) -> str:
    """A Chinese résumé sentence (template 0 is the issue's example form)."""
    return _ZH_TEMPLATES[template].format(name=name, phone=phone, email=email, skills=_join_zh(skills),
                                          years=years, role=role)


def _resume_en(rng: random.Random) -> tuple[str, dict]:
    first, last = rng.choice(_EN_FIRST), rng.choice(_EN_LAST)
    gold = {
        "name": f"{first} {last}",
        "phone": f"+1 {rng.randint(200, 989)}-555-{rng.randint(0, 9999):04d}",
        "email": f"{first.lower()}.{last.lower()}@{rng.choice(_DOMAINS)}",
        "skills": rng.sample(_EN_SKILLS, rng.randint(2, 4)),
        "experience_years": rng.randint(1, 25),
    }
    text = rng.choice(_EN_TEMPLATES).format(name=gold["name"], phone=gold["phone"], email=gold["email"],
                                            skills=_join_en(gold["skills"]), years=gold["experience_years"],
                                            role=rng.choice(_EN_ROLES))
    return text, gold


def _resume_zh(rng: random.Random) -> tuple[str, dict]:
    name = rng.choice(_ZH_NAMES)
    gold = {
        "name": name,
        "phone": f"1{rng.randint(30, 89)}-{rng.randint(0, 9999):04d}-{rng.randint(0, 9999):04d}",
        "email": f"{_ZH_PINYIN[name]}@{rng.choice(_DOMAINS)}",
        "skills": rng.sample(_EN_SKILLS, rng.randint(2, 4)),
        "experience_years": rng.randint(1, 25),
    }
    text = resume_zh_text(gold["name"], gold["phone"], gold["email"], gold["skills"], gold["experience_years"],
                          rng.choice(_ZH_ROLES), template=rng.randrange(len(_ZH_TEMPLATES)))
    return text, gold


def _price(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.2f}"


def _order(rng: random.Random) -> tuple[str, dict]:
    currency = rng.choice(CURRENCIES)
    items = []
    for product in rng.sample(_PRODUCTS, rng.randint(1, 4)):
        # Yen prices are whole numbers; the others have cents.
        price = rng.randint(1, 300) * 10 if currency == "JPY" else rng.randint(50, 20000) / 100
        items.append({"name": product, "quantity": rng.randint(1, 12), "unit_price": price})
    gold = {"order_id": f"{rng.choice('ABCDEFGH')}-{rng.randint(1000, 9999)}", "customer": rng.choice(_CUSTOMERS),
            "currency": currency, "items": items}
    described = _join_en([f"{it['quantity']} x {it['name']} at {_price(it['unit_price'])} each" for it in items])
    text = rng.choice(_ORDER_TEMPLATES).format(order_id=gold["order_id"], customer=gold["customer"], items=described,
                                               currency=currency, currency_words=_CURRENCY_WORDS[currency])
    return text, gold


def _date_words(year: int, month: int, day: int) -> str:
    return f"{_MONTHS[month - 1]} {day}, {year}"


def _event(rng: random.Random) -> tuple[str, dict]:
    year, month, day = rng.randint(2024, 2027), rng.randint(1, 12), rng.randint(1, 26)
    city, country = rng.choice(_PLACES)
    gold: dict[str, Any] = {"title": f"{rng.choice(_EVENT_ADJ)} {rng.choice(_EVENT_KINDS)}",
                            "start_date": f"{year:04d}-{month:02d}-{day:02d}"}
    when = f"on {_date_words(year, month, day)}"
    if rng.random() < 0.4:
        end = day + rng.randint(1, 2)
        gold["end_date"] = f"{year:04d}-{month:02d}-{end:02d}"
        when = f"from {_date_words(year, month, day)} to {_date_words(year, month, end)}"
    location: dict[str, str] = {}
    where = f"{city}, {country}"
    if rng.random() < 0.6:
        location["venue"] = rng.choice(_VENUES)
        where = f"{location['venue']}, {where}"
    gold["location"] = {**location, "city": city, "country": country}
    text = f"The {gold['title']} takes place {when} at {where}."
    if rng.random() < 0.5:
        gold["organizer"] = rng.choice(_ORGS)
        text += f" It is organised by {gold['organizer']}."
    return text, gold


GENERATORS: dict[str, Callable[[random.Random], tuple[str, dict]]] = {
    "resume_en": _resume_en, "resume_zh": _resume_zh, "order": _order, "event": _event,
}
