"""The shared normalisation (evalsuite.scoring.normalize) and the readers that go
through it: GSM8K's extractors, the equations reader and the needle matcher.

Expected values are worked by hand from the rules in the module docstring.
"""

import pytest

from evalsuite.scoring.equations import EquationSpec, parse_value, verify
from evalsuite.scoring.needle import found_values
from evalsuite.scoring.normalize import (
    canonical_decimal,
    join_digit_groups,
    last_boxed,
    match_key,
    normalize_text,
    unbox,
)
from tasks.gsm8k import flexible_extract, normalize_number, strict_match

MINUS_SIGNS = ["\u2212", "\u2012", "\u2013", "\u2014", "\u2010", "\u2011", "\ufe63", "\uff0d", "\u02d7", "\u2796"]
SPACES = ["\u00a0", "\u2009", "\u202f", "\u2007", "\u2002", "\u3000"]


@pytest.mark.parametrize("minus", MINUS_SIGNS)
def test_every_minus_sign_and_dash_is_a_sign_before_digits(minus):
    assert normalize_text(f"x = {minus}5") == "x = -5"
    assert strict_match(f"The answer is {minus}5.") == "-5"
    assert flexible_extract(f"so it drops to {minus}12 degrees") == "-12"
    assert verify(f"Final answer: x = {minus}5", EquationSpec(("x + 5 = 0",), ("x",), (("-5",),))).status == "right"


@pytest.mark.parametrize("space", SPACES)
def test_typographic_spaces_group_thousands(space):
    assert normalize_text(f"70{space}000") == "70000"
    assert strict_match(f"The answer is 1{space}234{space}567.") == "1234567"


@pytest.mark.parametrize("text, expected", [
    ("\uff11\uff18", "18"),            # full-width digits
    ("\u0661\u0668", "18"),            # Arabic-Indic digits
    ("\u0967\u096e", "18"),            # Devanagari digits
    ("x\u00b2", "x^{2}"),              # superscripts keep their meaning (NFKC alone would give x2)
    ("10\u207b\u00b3", "10^{-3}"),
    ("x\u2081", "x_{1}"),
    ("1\u00bd", "(1+1/2)"),            # a mixed number (NFKC alone would give 11/2)
    ("\u00be", "(3/4)"),
    ("3\u20444", "3/4"),               # fraction slash
    ("a\u200bb", "ab"),                # zero-width space
    ("\uff04\uff15", "5"),             # full-width dollar before a number
])
def test_unicode_forms(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("text, expected", [
    (r"-\,3", "-3"),
    (r"3{,}000", "3000"),
    (r"14 {, }916", "14916"),
    (r"11,\! 111,\! 100", "11111100"),
    (r"\$18", "18"),
    (r"28\%", "28%"),
    (r"\text{5 dollars}", " 5 dollars "),
    (r"\mathrm{\textbf{7}}", "  7  "),
    (r"\left( 2 \right)", " ( 2  )"),
    (r"90^\circ", "90 "),
    (r"90^{\circ}", "90 "),
    ("45\u00b0", "45 "),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"$x = 3$", " x = 3 "),
    ("1,000.99\u20ac", "1000.99 "),   # euro sign dropped
])
def test_latex_and_currency_forms(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The answer is - 5", "The answer is -5"),
    ("x = - 5", "x = -5"),
    ("answer: - 5", "answer: -5"),
    ("- 5 degrees", "-5 degrees"),
    ("10 - 5", "10 - 5"),              # a subtraction stays one
    ("apples - 5 of them", "apples - 5 of them"),
])
def test_a_sign_separated_from_its_number_joins_it_only_where_a_sign_can_stand(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("7,425,000", "7425000"),
    ("7 425 000", "7425000"),
    ("1,000.5", "1000.5"),
    ("x = 1,000", "x = 1000"),
    ("1,22", "1,22"),                  # not groups of three: a list (no decimal comma)
    ("0,111", "0,111"),                # a group does not start with 0
    ("32, 349", "32, 349"),            # comma then space: a list
    ("{1,2,3}", "{1,2,3}"),
    ("1,000,00", "1,000,00"),          # a bad last group spoils the run
    ("1,000 000", "1000 000"),         # one kind of separator per number
    ("12345,678", "12345,678"),        # a first group of more than three digits
    ("0.5,000", "0.5,000"),            # not after a decimal point
])
def test_the_comma_rule(text, expected):
    assert join_digit_groups(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("018.50", "18.5"), ("-0.0", "0"), (".5", "0.5"), ("5.", "5"), ("-12", "-12"),
    ("18.00000000000000000000000000001", "18.00000000000000000000000000001"),  # issue 19: no rounding
    ("123456789012345678901234567890123", "123456789012345678901234567890123"),
    ("1e3", None), ("", None), ("-", None), (".", None), ("1.2.3", None),
])
def test_canonical_decimal_is_exact(text, expected):
    assert canonical_decimal(text) == expected


def test_gsm8k_never_rounds_to_28_digits():
    assert normalize_number("18.00000000000000000000000000001") != "18"
    assert strict_match("The answer is 18.00000000000000000000000000001") != "18"
    assert flexible_extract("so 18.00000000000000000000000000001") != "18"


@pytest.mark.parametrize("output", [
    "The answer is $\\boxed{18}$.", "The answer is **18**.", "The answer is: 18 dollars.",
    "Final answer: \\(18\\)", "#### 18", "The answer is \\$18.00", "The answer is 18%.",
    "The answer is \uff11\uff18.", "The answer is 18. I hope it is correct.",
])
def test_both_gsm8k_extractors_read_the_final_line_forms(output):
    assert strict_match(output) == flexible_extract(output) == "18"


@pytest.mark.parametrize("output, expected", [
    ("The area is 25 m\u00b2.", "25"),             # an exponent is not a number
    ("The answer is x_{1} = 4", "4"),
    ("So $x^{-3}$ is 7", "7"),
])
def test_flexible_extract_skips_exponents_and_subscripts(output, expected):
    assert flexible_extract(output) == expected


def test_boxes():
    assert last_boxed(r"a \boxed{1} b \boxed{\frac{2}{3}} c") == r"\frac{2}{3}"
    assert last_boxed(r"\boxed{1} \boxed{2") == "1"   # an unclosed box is not the last one
    assert last_boxed("none") is None
    assert unbox(r"x = \boxed{\boxed{2}} and \boxed{3}") == "x = 2 and 3"
    assert unbox(r"\boxed{open") == "open"


@pytest.mark.parametrize("text, expected", [
    ("1 000", 1000), ("\u22123", -3), ("3{,}000", 3000), (r"-\,\frac{1}{2}", parse_value("-1/2")),
    ("204_5", 54), ("1112112_3", 1 * 729 + 1 * 243 + 1 * 81 + 2 * 27 + 1 * 9 + 1 * 3 + 2), ("\u00bd", parse_value("1/2")),
])
def test_the_equations_grammar_reads_normalised_numbers(text, expected):
    assert parse_value(text) == expected


# --- needles ---------------------------------------------------------------------

@pytest.mark.parametrize("output", [
    "4829173", "It is 4,829,173.", "**4829173**", "4 829 173",
    "`4829173`", "\uff14\uff18\uff12\uff19\uff11\uff17\uff13", "The secret number for amber-falcon is: 4829173!",
    "(#4829173)", "4829173\n",
])
def test_a_needle_is_found_whatever_its_punctuation_or_spacing(output):
    assert found_values(output, ["4829173"]) == ["4829173"]


@pytest.mark.parametrize("output", ["48291730", "14829173", "x4829173", "4829-173", "482917", "I do not know."])
def test_a_needle_is_never_found_inside_a_longer_number_or_word(output):
    assert found_values(output, ["4829173"]) == []


@pytest.mark.parametrize("output", ["AMBER-FALCON", "Amber Falcon", "amber_falcon", "the key 'amber falcon.'"])
def test_word_needles_ignore_case_and_punctuation(output):
    assert found_values(output, ["amber-falcon"]) == ["amber-falcon"]


def test_match_key():
    assert match_key("Amber-Falcon: 4,829,173.") == ("amber", "falcon", "4829173")
    with pytest.raises(ValueError, match="no letter or digit"):
        found_values("anything", ["--"])


def test_one_bracket_matcher_for_latex_groups_and_json_objects():
    from evalsuite.scoring.normalize import bracket_pairs

    assert bracket_pairs("a{b{c}d}}{") == {3: 5, 1: 7}  # the stray } and the unclosed { are left out
    text = '{"k": "}{", "n": {"x": "\\"}"}}'
    # 0 {, 7 } inside "}{", 17 { of "n", 26 } inside the escaped string, 28 and 29 the closing braces
    assert bracket_pairs(text, json_strings=True) == {17: 28, 0: 29}
    assert bracket_pairs(text)[0] == 7  # without JSON strings the quoted } closes the first {
