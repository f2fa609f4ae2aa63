"""The reply job alone: a real SQLite store, a recording sender per kind, no HTTP."""
import pytest

from catbot.outbound import Outcome, SendResult
from catbot.replier import Replier
from catbot.replies import HELP_TEXT, STOP_TEXT, Intent
from catbot.store import Inbound
from catbot.store.sqlite import SqliteStore
from fakes import NoFacts, RecordingSender


@pytest.fixture
def store(tmp_path):
    return SqliteStore(str(tmp_path / "s.sqlite3"))


def message(n: int, intent: Intent = Intent.FACT, kind: str = "x_dm", user: str = "3000000002") -> Inbound:
    return Inbound(kind, "2000000001", user, str(1800 + n), intent, n)


def replier(settings, store, **senders) -> Replier:
    return Replier(settings, store, senders, NoFacts())


def test_each_batch_goes_to_the_sender_of_its_kind(settings, store):
    dms, chats = RecordingSender(), RecordingSender()
    store.record([message(1, user="3000000002"), message(2, kind="other", user="3000000003")], 1000.0)
    replier(settings, store, x_dm=dms, other=chats).run_pass()
    assert [(k, u) for k, u, _ in dms.sent] == [("x_dm", "3000000002")]
    assert [(k, u) for k, u, _ in chats.sent] == [("other", "3000000003")]


def test_several_messages_are_one_reply_composed_the_same_for_every_kind(settings, store):
    sender = RecordingSender()
    store.record([message(1, Intent.FACT), message(2, Intent.HELP), message(3, Intent.STOP)], 1000.0)
    replier(settings, store, x_dm=sender).run_pass()
    assert [text for _, _, text in sender.sent] == [STOP_TEXT]
    store.record([message(4, Intent.HELP)], 1001.0)
    replier(settings, store, x_dm=sender).run_pass()
    assert len(sender.sent) == 1  # opted out: nothing but the answer to start


def test_help_text_reaches_the_sender_whole(settings, store):
    sender = RecordingSender()
    store.record([message(1, Intent.HELP)], 1000.0)
    replier(settings, store, x_dm=sender).run_pass()
    assert sender.sent[0][2] == HELP_TEXT


def test_a_batch_whose_kind_has_no_sender_is_closed_not_retried_forever(settings, store):
    store.record([message(1, kind="switched_off")], 1000.0)
    replier(settings, store, x_dm=RecordingSender()).run_pass()
    assert store.health()["pending_messages"] == 0


def test_a_rejected_send_closes_the_batch_and_a_retry_keeps_it(settings, store):
    rejected = RecordingSender(SendResult(Outcome.REJECTED, 403, "cannot be messaged"))
    store.record([message(1, user="3000000002")], 1000.0)
    replier(settings, store, x_dm=rejected).run_pass()
    assert store.health()["pending_messages"] == 0
    retry = RecordingSender(SendResult(Outcome.RETRY, 503))
    store.record([message(2, user="3000000003")], 1000.0)
    replier(settings, store, x_dm=retry).run_pass()
    assert store.health()["pending_messages"] == 1 and len(retry.sent) == 1


def test_a_failing_import_after_the_send_does_not_keep_the_batch_claimed(settings, store):
    """The import after X's 201 is optional; whatever it raises, the completion must land, or
    the batch would go out again when its lease ends."""
    imports = []

    def import_journals():
        imports.append(1)
        if len(imports) == 2:  # the one right after the send
            raise OSError(24, "Too many open files")

    sender = RecordingSender()
    store.record([message(1)], 1000.0)
    Replier(settings, store, {"x_dm": sender}, NoFacts(), import_journals=import_journals).run_pass()
    assert len(sender.sent) == 1 and store.health()["pending_messages"] == 0
    assert store.sent_since("2000000001", "3000000002", 0) == 1
