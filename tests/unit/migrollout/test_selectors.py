"""Label selectors matched as the API server matches them (k8s.io/apimachinery/pkg/labels), so the plan's
check-mode listing selects the pods the evacuation's server-side labelSelector selects."""

import pytest

from migrollout.selectors import SelectorError, from_label_selector, parse

LABELS = {"app": "train", "tier": "batch", "gpu": "2", "empty": ""}

# (selector, matches LABELS?)
TABLE = [
    ("", True),
    ("app=train", True),
    ("app==train", True),
    ("app = train", True),
    ("app=serve", False),
    ("app!=serve", True),
    ("app!=train", False),
    ("missing!=x", True),           # != matches an absent label
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("tier in (train,batch)", True),
    ("tier in (train, web)", False),
    ("tier notin (train,web)", True),
    ("tier notin (batch)", False),
    ("missing notin (x)", True),    # notin matches an absent label
    ("missing in (x)", False),
    ("app=train,tier in (batch),!canary", True),
    ("app=train,tier=web", False),
    ("empty=", True),
    ("empty in ()", True),          # "()" is the set of the empty value, as the server reads it
    ("empty in (,x)", True),
    ("app in (,x)", False),
    ("gpu>1", True),
    ("gpu<2", False),
    ("app>1", False),               # not an integer: no match
    ("missing>1", False),
]


@pytest.mark.parametrize(("selector", "expected"), TABLE)
def test_matches_as_the_api_server(selector, expected):
    assert parse(selector).matches(LABELS) is expected


@pytest.mark.parametrize("selector", ["app in (a", "app in a", "=x", "app=x=y", "app in (a b)", "a,,b", "app>x",
                                      "app=tr ain", "-bad=x", "app==(x)", "a b"])
def test_refuses_what_the_api_server_refuses(selector):
    with pytest.raises(SelectorError):
        parse(selector)


def test_label_selector_objects():
    assert from_label_selector(None).matches(LABELS) is False           # null: nothing
    assert from_label_selector({}).matches(LABELS) is True              # empty: everything
    assert from_label_selector({"matchLabels": {"app": "train"}}).matches(LABELS)
    selector = {"matchLabels": {"app": "train"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]},
                                     {"key": "canary", "operator": "DoesNotExist"}]}
    assert from_label_selector(selector).matches(LABELS)
    assert not from_label_selector({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}
                                   ).matches(LABELS)
    with pytest.raises(SelectorError):
        from_label_selector({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]})
