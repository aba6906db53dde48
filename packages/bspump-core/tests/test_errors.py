"""describe_error: the one-line form of an exception in logs and error messages."""

from __future__ import annotations

from bspump.errors import describe_error


class ClientError(Exception):
    """Like aiokafka's errors, whose str() starts with the class name."""

    def __str__(self) -> str:
        return f"ClientError: {self.args[0]}" if self.args else "ClientError"


def test_type_and_message_on_one_line_with_credentials_hidden() -> None:
    assert describe_error(ValueError("bad\n  value at postgresql://u:pw@h/db")) == \
        "ValueError: bad value at postgresql://u:***@h/db"
    assert describe_error(TimeoutError()) == "TimeoutError"
    assert describe_error(None) == "no details"


def test_a_message_that_already_names_its_type_is_not_prefixed_twice() -> None:
    error = ClientError("Unable to bootstrap from h:9092")
    assert describe_error(error) == "ClientError: Unable to bootstrap from h:9092"
    assert describe_error(ClientError()) == "ClientError"
