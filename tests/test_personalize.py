"""Per-reader copies rendered once: reader fields, escaping, header safety, signed links."""

from __future__ import annotations

import email
import re
from email import policy
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from conftest import REPO, SAMPLE_ISSUE, write_issue
from spark_mail.audience import AudienceError, Reader
from spark_mail.config import Secret, Settings, load_settings
from spark_mail.errors import ConfigError, LayoutError
from spark_mail.personalize import PersonalizedTemplate, prepare, sign_token, verify_token
from spark_mail.render import build, unsubscribe_headers
from spark_mail.render import layout as layout_mod

SECRET = "test-signing-secret-0123456789"
GREETING = """
    <mj-section css-class="card" padding="8px 0">
      <mj-column>
        <mj-text><p>Hi {{ reader.first_name | default("there") }},</p>
        <p><a href="https://example.com/hello?name={{ reader.first_name }}" title="{{ reader.first_name }}">Say hello</a> to {{ reader.email }}</p></mj-text>
      </mj-column>
    </mj-section>
"""


def make_layout(root: Path, name: str, extra: str, *, footer: str | None = None) -> None:
    """layouts/<name>/email.mjml: the default layout with `extra` after the header."""
    entry = (REPO / "layouts" / "default" / "email.mjml").read_text(encoding="utf-8")
    entry = entry.replace(
        '{% include "partials/header.mjml" %}', '{% include "partials/header.mjml" %}' + extra
    )
    folder = root / "layouts" / name
    folder.mkdir(parents=True)
    (folder / "email.mjml").write_text(entry, encoding="utf-8")
    if footer is not None:
        (folder / "partials").mkdir()
        (folder / "partials" / "footer.mjml").write_text(footer, encoding="utf-8")


def settings_for(root: Path, secret: str = SECRET) -> Settings:
    return load_settings(start=root, env={"SPARK_MAIL_SIGNING_SECRET": secret} if secret else {})


@pytest.fixture
def greet(newsletter: Path) -> Path:
    """An issue using a layout that greets the reader and links with their name."""
    make_layout(newsletter, "greet", GREETING)
    return write_issue(
        newsletter,
        "greet",
        "title: Hello\ndate: 2025-02-03\nlayout: greet\npoll:\n  question: Good?\n"
        "  options: [Yes, No]",
    )


def reader(address: str = "ann@example.com", **fields: str) -> Reader:
    return Reader(address, {"email": address, **fields}, 2)


def test_build_without_a_reader_is_the_generic_email(newsletter: Path):
    """`build` leaves no markers: the sample's links and headers are the settings' own."""
    settings = settings_for(newsletter, secret="")
    built = build(newsletter / "issues" / SAMPLE_ISSUE.name, settings)
    for part in (built.html, built.text, *built.headers.values()):
        assert "spkrdr" not in part
    assert built.headers == unsubscribe_headers(settings)
    assert f'href="{settings.unsubscribe_url}"' in built.html
    assert f"Unsubscribe: {settings.unsubscribe_url}\n" in built.text
    assert "token=" not in built.html and "token=" not in built.text


def test_build_of_an_opted_in_layout_shows_the_defaults(greet: Path):
    """A layout using reader fields builds with their defaults: "Hi there", empty values."""
    built = build(greet, settings_for(greet.parent.parent, secret=""))
    assert "Hi there," in built.html
    assert 'href="https://example.com/hello?name="' in built.html
    assert "spkrdr" not in built.html


def test_each_copy_gets_its_reader_values_and_the_layout_default(greet: Path):
    """first_name fills in; a missing or blank first_name falls back to "there"."""
    template = prepare(greet, settings_for(greet.parent.parent))
    assert "Hi Ann," in template.copy(reader(first_name="Ann")).html
    assert "Hi there," in template.copy(reader("bo@example.com")).html
    blank = template.copy(reader("cy@example.com", first_name="   "))
    assert "Hi there," in blank.html and "to cy@example.com" in blank.html
    assert "spkrdr" not in blank.html + blank.text + "".join(blank.headers.values())


def test_reader_fields_are_found_by_their_loose_column_name(newsletter: Path):
    """`reader["First Name"]` and `reader.First_Name` both read the `first_name` column."""
    make_layout(newsletter, "loose", '<mj-section><mj-column><mj-text>{{ reader["First Name"] }}/{{ reader.First_Name | default("?") }}</mj-text></mj-column></mj-section>')  # fmt: skip
    issue = write_issue(newsletter, "loose", "title: Hi\ndate: 2025-02-03\nlayout: loose")
    template = prepare(issue, settings_for(newsletter))
    assert "Ann/Ann" in template.copy(reader(first_name="Ann")).html


def test_a_script_name_is_escaped_in_html(greet: Path):
    """A reader named <script>alert(1)</script> is shown as text, never as markup."""
    template = prepare(greet, settings_for(greet.parent.parent))
    copy = template.copy(reader(first_name="<script>alert(1)</script>"))
    assert "<script>alert" not in copy.html
    assert "Hi &lt;script&gt;alert(1)&lt;/script&gt;," in copy.html
    assert 'title="&lt;script&gt;alert(1)&lt;/script&gt;"' in copy.html


def test_a_value_inside_a_link_is_url_quoted(greet: Path):
    """In an href the value is URL-quoted (no breaking out of the URL or the attribute)."""
    template = prepare(greet, settings_for(greet.parent.parent))
    copy = template.copy(reader(first_name='Al "Bo" & <Cy>'))
    assert 'href="https://example.com/hello?name=Al%20%22Bo%22%20%26%20%3CCy%3E"' in copy.html
    assert 'title="Al &quot;Bo&quot; &amp; &lt;Cy&gt;"' in copy.html  # other attribute


def test_a_line_break_in_a_field_cannot_add_a_header(greet: Path):
    """`x\\r\\nBcc: y` in a field stays on one line: the message gets no Bcc header."""
    template = prepare(greet, settings_for(greet.parent.parent))
    copy = template.copy(reader(first_name="x\r\nBcc: evil@example.net"))
    assert "\r" not in copy.html.split("Hi ")[1][:40] and "Hi x Bcc: evil@example.net," in copy.html
    raw = copy.to_mime(template.email).as_bytes()
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Bcc"] is None and "evil@example.net" not in str(msg["To"])
    assert msg["To"] == "ann@example.com"
    assert set(msg.keys()) == set(template.email.to_mime(to="x@example.com").keys())


def test_an_address_with_a_line_break_is_refused(greet: Path):
    """A reader address with CR/LF (not from the validated CSV) is refused, not sent."""
    template = prepare(greet, settings_for(greet.parent.parent))
    with pytest.raises(AudienceError, match="line 2"):
        template.copy(reader("ann@example.com\r\nBcc: evil@example.net"))


def unsubscribe_url(headers: dict[str, str]) -> str:
    match = re.match(r"<(https://[^>]+)>", headers["List-Unsubscribe"])
    assert match, headers
    return match.group(1)


def test_unsubscribe_link_and_header_are_per_reader_and_signed(newsletter: Path):
    """The footer link, the text part and List-Unsubscribe carry the reader's own token."""
    settings = settings_for(newsletter)
    template = prepare(newsletter / "issues" / SAMPLE_ISSUE.name, settings)
    copy = template.copy(reader("a+b@example.com"))
    url = unsubscribe_url(copy.headers)
    assert url.startswith(settings.unsubscribe_url + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["email"] == "a+b@example.com" and query["issue"] == template.email.slug
    secret = settings.signing_secret
    slug = template.email.slug
    assert verify_token(secret, slug, "a+b@example.com", "unsubscribe", query["token"])
    assert not verify_token(secret, slug, "other@example.com", "unsubscribe", query["token"])
    assert not verify_token(secret, slug, "a+b@example.com", "poll", query["token"])
    assert not verify_token(
        secret, "another-issue", "a+b@example.com", "unsubscribe", query["token"]
    )
    assert f'href="{url.replace("&", "&amp;")}"' in copy.html
    assert f"Unsubscribe: {url}\n" in copy.text
    assert copy.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    other = template.copy(reader("bo@example.com"))
    assert unsubscribe_url(other.headers) != url


@pytest.mark.parametrize(
    "address", ["ann@example.com", "x_y.z~w-1@sub.example.org", "a+b@example.com", "o'n%l@ex.com"]
)
def test_the_address_in_a_link_is_quoted_exactly_as_quote_does(newsletter: Path, address: str):
    """Plain addresses take a fast path; every address ends up as quote(address, safe="")."""
    template = prepare(newsletter / "issues" / SAMPLE_ISSUE.name, settings_for(newsletter))
    url = unsubscribe_url(template.copy(reader(address)).headers)
    assert f"&email={quote(address, safe='')}&token=" in url


def test_poll_links_carry_a_poll_token(newsletter: Path):
    """Each poll answer links with the reader's address and a token for purpose "poll"."""
    settings = settings_for(newsletter)
    template = prepare(newsletter / "issues" / SAMPLE_ISSUE.name, settings)
    copy = template.copy(reader("ann@example.com"))
    links = re.findall(r'href="(https://tinybigspark.com/poll/[^"]+)"', copy.html)
    assert len(links) == 3
    for index, link in enumerate(links, start=1):
        query = {k: v[0] for k, v in parse_qs(urlsplit(link.replace("&amp;", "&")).query).items()}
        assert query["answer"] == str(index) and query["email"] == "ann@example.com"
        assert verify_token(
            settings.signing_secret, template.email.slug, "ann@example.com", "poll", query["token"]
        )
    assert copy.text.count("token=") == 4  # three answers + unsubscribe


def test_tokens_are_url_safe_and_case_insensitive_in_the_address():
    """A token is URL-safe base64 and the same for ANN@example.com and ann@example.com."""
    secret = Secret(SECRET)
    token = sign_token(secret, "issue", "ANN@example.com", "unsubscribe")
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", token)
    assert verify_token(secret, "issue", "ann@example.com", "unsubscribe", token)
    assert not verify_token(Secret("another-secret-0123456789"), "issue", "ann@example.com",
                            "unsubscribe", token)  # fmt: skip


def test_missing_signing_secret_is_a_config_error_naming_the_variable(newsletter: Path):
    """Per-reader links without SPARK_MAIL_SIGNING_SECRET: a ConfigError saying how to fix."""
    with pytest.raises(ConfigError, match="SPARK_MAIL_SIGNING_SECRET is not set"):
        prepare(newsletter / "issues" / SAMPLE_ISSUE.name, settings_for(newsletter, secret=""))


def test_a_short_secret_is_refused_without_showing_it(newsletter: Path):
    """A guessable secret is refused; the message never contains it."""
    with pytest.raises(ConfigError) as info:
        prepare(newsletter / "issues" / SAMPLE_ISSUE.name, settings_for(newsletter, "hunter2"))
    assert "too short" in str(info.value) and "hunter2" not in str(info.value)


def test_the_secret_never_appears_in_a_copy(newsletter: Path):
    """Neither the HTML, the text, the headers nor the template's repr show the secret."""
    template = prepare(newsletter / "issues" / SAMPLE_ISSUE.name, settings_for(newsletter))
    copy = template.copy(reader())
    everything = copy.html + copy.text + repr(copy.headers) + repr(vars(template))
    assert SECRET not in everything


def test_a_filter_other_than_default_on_a_reader_field_is_refused(newsletter: Path):
    """`| upper` would mangle the marker: refused with the layout named and a fix."""
    make_layout(newsletter, "shout", "<mj-section><mj-column><mj-text>{{ reader.first_name | upper }}</mj-text></mj-column></mj-section>")  # fmt: skip
    issue = write_issue(newsletter, "shout", "title: Hi\ndate: 2025-02-03\nlayout: shout")
    with pytest.raises(LayoutError, match=r"layout 'shout'.*other than `default`"):
        prepare(issue, settings_for(newsletter))


def test_a_layout_without_a_per_reader_unsubscribe_link_is_refused(newsletter: Path):
    """Own-list copies need the reader's own unsubscribe link in the HTML, not the shared one."""
    footer = '<mj-section><mj-column><mj-text><a href="{{ newsletter.unsubscribe_url }}">Unsubscribe</a></mj-text></mj-column></mj-section>'
    make_layout(newsletter, "shared", "", footer=footer)
    issue = write_issue(newsletter, "shared", "title: Hi\ndate: 2025-02-03\nlayout: shared")
    with pytest.raises(LayoutError, match="no per-reader unsubscribe link"):
        prepare(issue, settings_for(newsletter))


def test_the_pipeline_runs_once_for_all_copies(greet: Path, monkeypatch: pytest.MonkeyPatch):
    """MJML compiles once in prepare(); a thousand copies never run it again."""
    calls = []
    compile_mjml = layout_mod.compile_mjml
    monkeypatch.setattr(layout_mod, "compile_mjml", lambda *a: calls.append(1) or compile_mjml(*a))
    template = prepare(greet, settings_for(greet.parent.parent))
    assert isinstance(template, PersonalizedTemplate) and template.personalized
    names = {
        template.copy(reader(f"r{i}@example.com", first_name=f"R{i}")).html for i in range(1000)
    }
    assert len(names) == 1000 and calls == [1]
