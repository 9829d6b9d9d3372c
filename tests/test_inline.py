"""The CSS inliner: the cascade, the element's own style, what stays in <head>, Outlook attributes."""

from __future__ import annotations

from spark_mail.render.inline import inline_css

PAGE = "<!doctype html><html><head><title>t</title></head><body>{}</body></html>"


def test_more_specific_rule_wins_whatever_the_order() -> None:
    """`.a p` beats `p` even when `p` comes later; the later of equals wins."""
    out = inline_css(
        PAGE.format('<div class="a"><p>x</p></div>'),
        ".a p { color: red } p { color: blue } p { margin: 0 } p { margin: 1px }",
    )
    assert '<p style="margin:1px; color:red">x</p>' in out  # in cascade order


def test_important_beats_specificity_and_the_own_style_wins() -> None:
    """An !important rule beats a more specific one; the element's own style beats both."""
    html = PAGE.format('<div class="a"><p>x</p><p style="color:green">y</p></div>')
    out = inline_css(html, "p { color: blue !important } .a p { color: red }")
    assert '<p style="color:blue !important">x</p>' in out
    assert '<p style="color:green">y</p>' in out


def test_pseudo_class_and_media_rules_stay_in_head_as_important() -> None:
    """Rules that cannot be inlined go into one <style> in <head>, made !important."""
    out = inline_css(
        PAGE.format("<a href='https://x.example'>x</a>"),
        "a:hover { color: red } @media (max-width: 480px) { a { color: blue } } a { color: black }",
    )
    head = out[: out.index("</head>")]
    assert "a:hover { color: red !important }" in head
    assert "@media (max-width: 480px) { a { color: blue !important } }" in head
    assert 'style="color:black"' in out


def test_outlook_gets_html_attributes_for_styled_elements() -> None:
    """text-align, vertical-align, background-color (6 digits), width and height in px also
    become align, valign, bgcolor, width and height; a floated image gets align."""
    html = PAGE.format(
        '<table><tr><td class="c">x</td></tr></table><img class="i" src="https://x.example/i.png" alt="i">'
    )
    out = inline_css(
        html,
        ".c { text-align: left; vertical-align: top; background-color: #abc; width: 120px } .i { float: right; height: 40px }",
    )
    assert 'align="left"' in out and 'valign="top"' in out and 'bgcolor="#aabbcc"' in out
    assert 'width="120"' in out
    assert 'align="right"' in out and 'height="40"' in out


def test_unknown_selectors_are_skipped_not_fatal() -> None:
    """A selector lxml cannot match is left out; the other rules still apply."""
    out = inline_css(PAGE.format("<p>x</p>"), "p::selection, p[ { color: red } p { color: blue }")
    assert '<p style="color:blue">x</p>' in out


# Trees and selectors where a look-up by tag and class could go wrong: nesting of the same
# class (descendants reached twice, out of document order), blanks other than the four
# XML ones (`\xa0` and `\x0c` do not split a class attribute), comments among children,
# upper case, a prefixed tag, an empty class, and a class that only contains a name.
ODD_TREE = (
    '<div class="a"><!-- c --><p class="b">1<span class="a">2<p class="b a">3</p></span></p>'
    '<div class="a\tb"><p>4</p><DIV class="c\xa0b">5</DIV></div></div>'
    '<table class=" card\n x_y "><tr><td class="">6<o:p>7</o:p></td><td class="a-b">8</td>'
    '</tr></table><p class="ab\x0cb">9</p>'
)
SIMPLE_SELECTORS = (
    ".a", ".b", "p", "*", ".a p", ".a > p", ".a .b", ".a > .b", "p.b", ".a.b", ".b.a p",
    ".a * p", ".card td", ".card > tr", "table.card td.a-b", ".x_y td", "Div", "div > div",
    ".a span .b", ".c", ".a-b", "td p", "td > *", "body > div > p", "div.a > p.b > span",
    "div Div", ".a > Div", "body > DIV",
)  # fmt: skip


def test_simple_selectors_select_what_lxml_selects() -> None:
    """The XPath of a simple selector, run on the tree's index (simple_xpath), selects what
    lxml selects from the same XPath: the same elements, in document order, each once."""
    from cssselect import GenericTranslator, HTMLTranslator, SelectorError
    from lxml import etree

    from spark_mail.render.simple_xpath import TreeIndex, plan

    root = etree.fromstring(PAGE.format(ODD_TREE), etree.HTMLParser())
    index = TreeIndex(root)
    planned = 0
    for selector in SIMPLE_SELECTORS:
        for translator in (HTMLTranslator(), GenericTranslator()):
            try:
                xpath = translator.css_to_xpath(selector)
            except SelectorError:
                continue
            steps = plan(xpath)
            if steps is not None:
                planned += 1
                assert index.select(steps) == etree.XPath(xpath)(root), (selector, xpath)
    assert planned == 2 * len(SIMPLE_SELECTORS) - 2  # `.a * p`: left to lxml


def test_xpath_of_other_shapes_is_left_to_lxml() -> None:
    from spark_mail.render.simple_xpath import plan

    assert plan("descendant-or-self::*[@id = 'x']") is None
    assert plan("descendant-or-self::p/following-sibling::p") is None
    assert plan("descendant-or-self::p[not(@class)]") is None
    assert plan("descendant-or-self::*[@class and contains(@class, 'a')]") is None
    assert plan("descendant::p") is None and plan("p") is None
