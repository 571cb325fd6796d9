"""What reaper shows of text it did not write: credentials masked, control characters escaped.

Guest ids, reply bodies and Redis values come from elsewhere. Shown as they are, a newline in
one writes a line of its own in the log (which can look like reaper's), an ANSI escape repaints
the operator's terminal, and a 401 that echoes the Authorization header puts a token in a dead
letter. ``scrub`` masks credentials, ``printable`` makes text one visible line, ``reply`` is a
reply body as an error quotes it. (JSON needs nothing more: json.dumps, ASCII by default, writes
every control character, DEL, C1 and U+2028 as an escape.) No I/O here.
"""

import base64
import re
from collections.abc import Callable, Iterable

MASK = "***"
REPLY_LIMIT = 200  # characters of a reply body kept in an error
_SCRUB_WINDOW = 20 * REPLY_LIMIT  # scrubbed before cutting, so a cut never halves a masked value

# -- control characters -------------------------------------------------------------------

# C0, DEL, C1 (NEL among them), the Unicode line and paragraph separators, the bidirectional
# controls that reorder what a terminal shows, and lone surrogates (names that are no UTF-8).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                      "\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` on one line, every control character written as a visible escape (``\\n``,
    ``\\x1b``, ``\\u2028``). Backslashes stay as they are: the text can be ambiguous, never forged."""
    return _CONTROL.sub(_escape, text)


def printable_lines(text: str) -> str:
    """Like ``printable``, but its newlines stay: for text that is several lines by nature."""
    return "\n".join(printable(line) for line in text.split("\n"))


# -- credentials -----------------------------------------------------------------------------

# A name that says its value is a credential: access_token, X-Api-Key, client_secret, passwd...
# (matched from the telling word on: a leading [\w.-]* would make every search quadratic)
_NAME = (r"(?:passw(?:or)?d|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
         r"private[_-]?key|auth[_-]?key|credential|authorization|cookie|signature)[\w.-]*")
# name = value, name: value, "name": "value", \"name\":\"value\" (JSON in a JSON string), with
# an optional auth scheme before a bare value ("Authorization: Bearer abc").
_PAIR = re.compile(
    rf"(?P<head>(?P<name>{_NAME})\\?[\"']?\s*[:=]\s*)(?P<value>"
    r'\\"(?:(?!\\").)*(?:\\"|$)'  # \"...\": JSON inside a JSON string
    r'|"(?:[^"\\]|\\.)*(?:"|$)'
    r"|'(?:[^'\\]|\\.)*(?:'|$)"
    r"|(?P<scheme>(?:bearer|basic|digest|token|negotiate)\s+)?[^\s\"'\\,;&}\]<>]+)",
    re.IGNORECASE)
# A Bearer token, or a Basic credential that looks like base64 (not "Basic authentication").
# Words one of which a text must hold (lowercased) for _PAIR to find anything: a quick test first.
_PAIR_WORDS = ("passw", "pwd", "secret", "token", "key", "credential", "authorization", "cookie",
               "signature")
_BEARER = re.compile(r"\b(?P<scheme>[Bb]earer\s+|BEARER\s+)[A-Za-z0-9._~+/-]{6,}=*"
                     r"|\b(?P<basic>Basic\s+)(?=[A-Za-z0-9+/]*[0-9+/=]|[A-Za-z0-9+/]+[A-Z])[A-Za-z0-9+/]{6,}=*")
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:'\"<>]*:)[^\s/'\"<>]*@")
_JWT = re.compile(r"\beyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")


_NAMES_A_CREDENTIAL = re.compile(_NAME, re.IGNORECASE)


def names_a_credential(name: str) -> bool:
    """Does a field's name say its value is a credential (auth_token, password, X-Api-Key)?"""
    return _NAMES_A_CREDENTIAL.search(name) is not None


def _masked_pair(match: re.Match) -> str:
    value = match.group("value")
    quote = next((q for q in ('\\"', '"', "'") if value.startswith(q)), None)
    masked = f"{quote}{MASK}{quote}" if quote else f"{match.group('scheme') or ''}{MASK}"
    return match.group("head") + masked


def _masked_credential(match: re.Match) -> str:
    return (match.group("scheme") or match.group("basic")) + MASK


def scrubber(secrets: Iterable[str] = ()) -> Callable[[str], str]:
    """A function masking, in any text, these known secrets and whatever looks like a credential:
    a URL's password, a Bearer or Basic credential, a JWT, the value of a name such as token,
    password, api-key or Authorization (in JSON, headers or a query string)."""
    known = sorted({s for s in secrets if s}, key=len, reverse=True)  # a longer one masked whole

    def scrub(text: str) -> str:
        for secret in known:
            text = text.replace(secret, MASK)
        if "://" in text:
            text = _USERINFO.sub(rf"\g<head>{MASK}@", text)
        lowered = text.lower()
        if any(word in lowered for word in _PAIR_WORDS):
            text = _PAIR.sub(_masked_pair, text)
        if "earer" in lowered or "basic" in lowered:
            text = _BEARER.sub(_masked_credential, text)
        return _JWT.sub(MASK, text) if "eyJ" in text else text

    return scrub


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    return scrubber(secrets)(text)


def cut(text: str, limit: int = REPLY_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def reply(response, limit: int = REPLY_LIMIT) -> str:
    """A reply body as an error quotes it: scrubbed of the credentials its request carried and of
    any that look like one, cut to ``limit`` characters, as a Python literal (escapes visible)."""
    text = response.text[:_SCRUB_WINDOW]
    return repr(cut(scrub(text, sent_secrets(response)), limit))


def sent_secrets(response) -> list[str]:
    """The credentials the request of ``response`` carried, in the spellings a body may echo."""
    try:
        request = response.request
    except RuntimeError:  # a response built by hand has none
        return []
    found = [request.url.password or ""]
    for name in ("authorization", "proxy-authorization", "x-api-key", "cookie"):
        for value in request.headers.get_list(name):
            found += _spellings(value)
    return [s for s in found if len(s) >= 3]


def _spellings(header: str) -> list[str]:
    scheme, _, credential = header.partition(" ")
    found = [header, credential.strip()]
    if scheme.lower() == "basic":
        try:
            user_password = base64.b64decode(credential.strip(), validate=True).decode()
        except ValueError:  # not base64, or not UTF-8
            return found
        found += [user_password, user_password.partition(":")[2]]
    return found
