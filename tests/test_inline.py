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
