"""The exception tree drawn in app/errors.py's docstring is the tree the module defines."""

from __future__ import annotations

import inspect
import re

from app import errors
from app.errors import GiveUp, ProviderError, ProviderUnavailable, RetryLater

# A node: a name at the start of a line (a root) or after a branch mark, then a gap or the line's end.
NODE = re.compile(r"^(?:[ │]*[├└]── )?(?P<name>[A-Z]\w*)(?=\s{2,}|$)")
BRANCH_WIDTH = 5  # " ├── ": each level of the drawing is indented this much further


def drawn_tree() -> list[tuple[str, str | None]]:
    """(class, the parent it is drawn under) for every node of the docstring's drawing."""
    parents: list[str] = []
    nodes = []
    for line in (errors.__doc__ or "").splitlines():
        if match := NODE.match(line):
            depth = match.start("name") // BRANCH_WIDTH
            parents[depth:] = [match["name"]]
            nodes.append((match["name"], parents[depth - 1] if depth else None))
    return nodes


def defined_classes() -> dict[str, type]:
    return {name: cls for name, cls in inspect.getmembers(errors, inspect.isclass) if cls.__module__ == errors.__name__}


def test_the_docstring_draws_every_class_once():
    names = [name for name, _ in drawn_tree()]

    assert sorted(names) == sorted(defined_classes())


def test_each_class_is_drawn_under_one_of_its_bases():
    classes = defined_classes()
    for name, parent in drawn_tree():
        bases = [base.__name__ for base in classes[name].__bases__]
        assert (parent or "Exception") in bases, name


def test_a_provider_outage_is_also_a_retry_later():
    exc = ProviderUnavailable("Kie.ai unreachable", code=503, retry_after=7.0, maybe_created=True)

    assert isinstance(exc, ProviderError) and isinstance(exc, RetryLater)
    assert (exc.message, exc.code, exc.retry_after, exc.maybe_created) == ("Kie.ai unreachable", 503, 7.0, True)
    assert repr(exc) == "ProviderUnavailable('Kie.ai unreachable', code=503)"
    assert ProviderUnavailable("slow").retry_after is None


def test_retry_later_and_give_up_carry_their_message():
    assert (RetryLater("HTTP 503", 30.0).message, RetryLater("HTTP 503", 30.0).retry_after) == ("HTTP 503", 30.0)
    assert RetryLater("timed out").retry_after is None
    assert GiveUp("host not allowed").message == "host not allowed"
    assert not isinstance(GiveUp("x"), RetryLater)
