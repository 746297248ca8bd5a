"""String `format`s enforced during decoding, as ECMA-262 patterns matched in full.

Each pattern's language is a subset of what the format's RFC allows, chosen to be small (a few
hundred DFA states at most) and natural for a model to write:

date, time, date-time   RFC 3339: upper-case "T"/"Z", at most 6 fraction digits, real calendar days
duration                RFC 3339 appendix A (ISO 8601): P1Y2M3DT4H5M6S, P2W, PT30M, ...
email                   dotted local part of RFC 5322 atoms' common characters, dotted DNS domain with
                        a letters-only top-level label
hostname                RFC 1123 labels of at most 49 characters, at most 5 labels (<= 249 characters)
ipv4, ipv6              dotted quad; RFC 4291 hex groups with at most one "::" (no embedded IPv4)
uri, uri-reference      RFC 3986 with a registered-name host (no IP literals), percent-encoding allowed
uuid                    RFC 4122 textual form, either case

Per the JSON Schema specification `format` is an annotation unless asserted: any other format
(e.g. "uri-template", "regex", a custom name) leaves the string unconstrained.
"""
from __future__ import annotations

_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"                # 0001-9999
_LEAP = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = ("(?:" + _YEAR + "-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
         "|02-(?:0[1-9]|1[0-9]|2[0-8]))|" + _LEAP + "-02-29)")
_TIME = ("(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?"
         "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_N = "[0-9]+"
_DUR_TIME = f"T(?:{_N}H(?:{_N}M(?:{_N}S)?)?|{_N}M(?:{_N}S)?|{_N}S)"
_DUR_DATE = f"(?:{_N}D|{_N}M(?:{_N}D)?|{_N}Y(?:{_N}M(?:{_N}D)?)?)"
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,47}[A-Za-z0-9])?"
_H16 = "[0-9a-fA-F]{1,4}"
# RFC 4291 2.2: eight groups, or k groups, "::" (one or more zero groups) and at most 7 - k groups


def _ipv6() -> str:
    parts = [f"(?:{_H16}:){{7}}{_H16}"]
    for k in range(8):
        before = "" if k == 0 else f"(?:{_H16}:){{{k - 1}}}{_H16}"
        after = f"(?:{_H16}(?::{_H16}){{0,{6 - k}}})?" if k < 7 else ""
        parts.append(before + "::" + after)
    return "(?:" + "|".join(parts) + ")"


_IPV6 = _ipv6()
_PCT = "%[0-9A-Fa-f]{2}"
_PCHAR = f"(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|{_PCT})"
_SEGNC = f"(?:[A-Za-z0-9._~!$&'()*+,;=@-]|{_PCT})"            # a segment character without ':'
_AUTH = (f"(?:(?:[A-Za-z0-9._~!$&'()*+,;=:-]|{_PCT})*@)?(?:[A-Za-z0-9._~!$&'()*+,;=-]|{_PCT})*(?::[0-9]*)?")
_ABEMPTY = f"(?:/{_PCHAR}*)*"
_ABSOLUTE = f"/(?:{_PCHAR}+{_ABEMPTY})?"
_QF = f"(?:\\?(?:{_PCHAR}|[/?])*)?(?:#(?:{_PCHAR}|[/?])*)?"
_URI = f"[A-Za-z][A-Za-z0-9+.-]*:(?://{_AUTH}{_ABEMPTY}|{_ABSOLUTE}|{_PCHAR}+{_ABEMPTY})?{_QF}"
_RELATIVE = f"(?://{_AUTH}{_ABEMPTY}|{_ABSOLUTE}|{_SEGNC}+{_ABEMPTY})?{_QF}"

FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": _DATE + "T" + _TIME,
    "duration": f"P(?:{_DUR_DATE}(?:{_DUR_TIME})?|{_DUR_TIME}|{_N}W)",
    "email": "[A-Za-z0-9_%+-]+(?:\\.[A-Za-z0-9_%+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\\.)+[A-Za-z]{2,}",
    "hostname": f"{_LABEL}(?:\\.{_LABEL}){{0,4}}",
    "ipv4": _OCTET + "(?:\\." + _OCTET + "){3}",
    "ipv6": _IPV6,
    "uri": _URI,
    "uri-reference": f"(?:{_URI}|{_RELATIVE})",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
}
