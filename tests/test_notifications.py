"""Notifications: events → outbox → in-app, email (a real SMTP server) and SMS (a stand-in provider API)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from notifications import services
from notifications.events import EVENTS, LANGUAGES
from notifications.models import Notification, OutboxMessage, PhoneVerification, Preference, SentSms
from notifications.sms import aliyun_signature, sms_length

ALICE_PHONE = "+8613800138000"


def verify_phone(user, phone: str = ALICE_PHONE):
    user.phone, user.phone_verified_at = phone, timezone.now()
    user.save(update_fields=["phone", "phone_verified_at"])
    return user


def notify_training(user, **extra):
    return services.notify(
        user=user,
        event=extra.pop("event", "training.succeeded"),
        subject_name="support-bot",
        subject_code="ftjob-0123456789abcdef0123",
        url="/console/jobs/ftjob-0123456789abcdef0123/",
        context={"model": "ft:smollm2-135m-instruct:support-bot:a1b2c3", "error": "out of memory"},
        **extra,
    )


def send_all() -> list[str]:
    return [services.outbox_send(message_id=pk)[0] for pk in OutboxMessage.objects.values_list("pk", flat=True)]


# --- SMS length -----------------------------------------------------------------


def test_sms_length_is_measured_in_gsm7_septets_or_ucs2_units():
    assert sms_length("a" * 160) == (sms_length("a" * 160).__class__)("GSM-7", 160, 1)
    assert sms_length("a" * 161).segments == 2 and sms_length("a" * 306).segments == 2
    assert sms_length("a" * 307).segments == 3
    # The extension table costs two septets a character.
    assert sms_length("€" * 80).units == 160 and sms_length("€" * 80).segments == 1
    assert sms_length("€" * 81).segments == 2
    # One character outside the GSM alphabet makes the whole text UCS-2: 70, then 67 a part.
    assert sms_length("微" * 70).encoding == "UCS-2" and sms_length("微" * 70).segments == 1
    assert sms_length("微" * 71).segments == 2
    assert sms_length("a" * 69 + "…").segments == 1 and sms_length("a" * 70 + "…").segments == 2
    assert sms_length("😀" * 35).units == 70 and sms_length("😀" * 36).segments == 2


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("event", sorted(name for name, e in EVENTS.items() if e.for_people))
def test_every_event_sms_fits_one_sms_in_both_languages(alice, event, language):
    alice.language = language
    verify_phone(alice)
    services.preferences_save(user=alice, enabled={(name, "sms") for name in EVENTS})
    long_name = "a-very-long-suffix-for-a-model-" * 4
    rows = services.notify(
        user=alice,
        event=event,
        subject_name=long_name,
        subject_code="ftjob-" + "f" * 20,
        url="/console/x/",
        context={"model": "ft:m:" + "x" * 40, "errors": 12345, "error": "boom", "instances": 3},
    )
    sms = next(r for r in rows if r.channel == "sms")
    assert sms_length(sms.body).segments == 1, sms.body
    assert "http://127.0.0.1:8000/n/" in sms.body  # each message links to its page
    if language == "zh-hans":
        assert sms_length(sms.body).encoding == "UCS-2"


def test_aliyun_signature_matches_the_documented_example():
    # The worked example of Alibaba Cloud SMS's signature documentation (SendSms, signature version 1.0).
    params = {
        "AccessKeyId": "testId",
        "Action": "SendSms",
        "Format": "XML",
        "OutId": "123",
        "PhoneNumbers": "15300000001",
        "RegionId": "cn-hangzhou",
        "SignName": "阿里云短信测试专用",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "45e25e9b-0a6f-4070-8c85-2956eda1b466",
        "SignatureVersion": "1.0",
        "TemplateCode": "SMS_71390007",
        "TemplateParam": '{"customer":"test"}',
        "Timestamp": "2017-07-12T02:42:19Z",
        "Version": "2017-05-25",
    }
    assert aliyun_signature(params, "testSecret") == "zJDF+Lrzhj/ThnlvIToysFRq6t4="


# --- notify and preferences -----------------------------------------------------


def test_notify_picks_channels_by_preferences_and_sends_sms_only_to_a_verified_number(alice, bob):
    assert {r.channel for r in notify_training(alice)} == {"in_app", "email"}  # phone not verified
    alice.phone = ALICE_PHONE
    alice.save()
    assert {r.channel for r in notify_training(alice)} == {"in_app", "email"}  # still not verified
    verify_phone(alice)
    assert {r.channel for r in notify_training(alice)} == {"in_app", "email", "sms"}
    # A worker lost is not an outcome: in-app only by default.
    assert {r.channel for r in notify_training(alice, event="training.requeued")} == {"in_app"}
    services.preferences_save(user=alice, enabled={("training.succeeded", "sms"), ("training.requeued", "email")})
    assert {r.channel for r in notify_training(alice)} == {"in_app", "sms"}
    assert {r.channel for r in notify_training(alice, event="training.requeued")} == {"in_app", "email"}
    # Bob's defaults are his own.
    bob.email = ""
    bob.save()
    assert {r.channel for r in notify_training(bob)} == {"in_app"}


def test_notify_is_part_of_the_transaction_that_changed_the_state(alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            notify_training(alice)
            raise RuntimeError("the state change failed")
    assert not OutboxMessage.objects.exists() and not callbacks
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        with transaction.atomic():
            notify_training(alice)
    assert OutboxMessage.objects.count() == 2 and len(callbacks) == 1


def test_preferences_page_saves_choices_and_keeps_in_app_on(alice_client, alice):
    page = alice_client.get(reverse("notifications:preferences"))
    assert page.status_code == 200 and "Training succeeded" in page.content.decode()
    response = alice_client.post(
        reverse("notifications:preferences"), {"on": ["training.failed:email", "training.succeeded:in_app"]}
    )
    assert response.status_code == 302
    prefs = services.preferences_for(user=alice)
    assert prefs[("training.failed", "email")] and not prefs[("training.succeeded", "email")]
    assert not prefs[("training.succeeded", "sms")] and prefs[("training.succeeded", "in_app")]
    assert not Preference.objects.filter(channel="in_app").exists()


# --- channels -------------------------------------------------------------------


def test_in_app_email_and_dev_sms_in_the_users_language(alice, settings, smtp_server):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    alice.language = "zh-hans"
    verify_phone(alice)
    notify_training(alice)
    assert sorted(send_all()) == ["sent", "sent", "sent"]
    [mail] = smtp_server.messages
    assert mail["Subject"] == "微调任务 support-bot 已成功" and mail["X-Envelope-To"] == "alice@example.com"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    url = "http://127.0.0.1:8000/console/jobs/ftjob-0123456789abcdef0123/"
    assert url in text and f'href="{url}"' in html and "ft:smollm2-135m-instruct:support-bot:a1b2c3" in text
    [sms] = SentSms.objects.all()
    assert sms.to == ALICE_PHONE and sms.body.startswith("微调任务 support-bot") and sms.segments == 1
    [note] = Notification.objects.filter(user=alice)
    assert note.title == "微调任务 support-bot 已成功" and note.url == url and note.read_at is None
    # Sending again changes nothing: each message was claimed once.
    assert send_all() == ["skip", "skip", "skip"]
    assert len(smtp_server.messages) == 1 and SentSms.objects.count() == 1 and Notification.objects.count() == 1


def test_email_refused_for_good_is_not_retried(alice, settings, smtp_server):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    smtp_server.reject.add("alice@example.com")
    notify_training(alice)
    email = OutboxMessage.objects.get(channel="email")
    assert services.outbox_send(message_id=email.pk) == ("failed", 0)
    assert services.outbox_send(message_id=email.pk) == ("skip", 0)
    email.refresh_from_db()
    assert email.status == "failed" and "550" in email.last_error and not smtp_server.messages


def test_email_server_down_is_tried_again_later(alice, settings):
    from notifications.models import OutboxStatus

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens: transient
    notify_training(alice)
    email = OutboxMessage.objects.get(channel="email")
    assert services.outbox_send(message_id=email.pk)[0] == "retry"
    email.refresh_from_db()
    assert email.status == OutboxStatus.PENDING and email.attempts == 1 and "transient" in email.last_error
    assert email.next_attempt_at > timezone.now() + timedelta(seconds=20)


def _aliyun(settings, provider):
    settings.SMS_BACKEND = "aliyun"
    settings.ALIYUN_SMS_ENDPOINT = provider.url
    settings.ALIYUN_SMS_ACCESS_KEY_ID, settings.ALIYUN_SMS_ACCESS_KEY_SECRET = "testId", "testSecret"
    settings.ALIYUN_SMS_SIGN_NAME, settings.ALIYUN_SMS_TEMPLATE_CODE = "控制台", "SMS_1000"
    settings.ALIYUN_SMS_VERIFY_TEMPLATE_CODE = "SMS_2000"

    def check_signature(request):
        query = dict(request["query"])
        signature = query.pop("Signature", "")
        if signature != aliyun_signature(query, "testSecret"):
            return 400, {"Code": "SignatureDoesNotMatch", "Message": "bad signature"}
        return None

    provider.check = check_signature


def test_aliyun_sms_transient_failure_is_retried_and_permanent_one_is_not(alice, settings, fake_provider):
    _aliyun(settings, fake_provider)
    settings.NOTIFICATIONS_RETRY_BASE = 0
    verify_phone(alice)
    fake_provider.replies = [(503, {"Code": "ServiceUnavailable"}), (200, {"Code": "OK", "BizId": "900^1"})]
    sms = next(r for r in notify_training(alice) if r.channel == "sms")
    assert services.outbox_send(message_id=sms.pk) == ("retry", 0)
    assert services.outbox_send(message_id=sms.pk) == ("sent", 0)
    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.provider_id) == ("sent", 2, "900^1")
    first, second = fake_provider.requests
    assert first["query"]["PhoneNumbers"] == "8613800138000" and first["query"]["TemplateCode"] == "SMS_1000"
    assert first["query"]["OutId"] == second["query"]["OutId"] == sms.key  # the same message, twice
    assert first["query"]["SignatureNonce"] != second["query"]["SignatureNonce"]
    # A number the provider refuses: recorded, never tried again.
    fake_provider.replies = [(200, {"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "invalid number"})]
    sms = next(r for r in notify_training(alice) if r.channel == "sms")
    assert services.outbox_send(message_id=sms.pk) == ("failed", 0)
    assert services.outbox_send(message_id=sms.pk) == ("skip", 0)
    sms.refresh_from_db()
    assert sms.status == "failed" and "isv.MOBILE_NUMBER_ILLEGAL" in sms.last_error and len(fake_provider.requests) == 3


def test_twilio_sms_over_its_http_api(alice, settings, fake_provider):
    settings.SMS_BACKEND, settings.TWILIO_API_BASE = "twilio", fake_provider.url
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, settings.TWILIO_FROM = "AC123", "token", "+15005550006"
    settings.NOTIFICATIONS_RETRY_BASE = 0
    verify_phone(alice)
    fake_provider.replies = [
        (429, {"code": 20429, "message": "Too Many Requests"}),
        (201, {"sid": "SM1"}),
        (400, {"code": 21211, "message": "Invalid 'To' Phone Number"}),
    ]
    sms = next(r for r in notify_training(alice) if r.channel == "sms")
    assert [services.outbox_send(message_id=sms.pk)[0] for _ in range(2)] == ["retry", "sent"]
    request = fake_provider.requests[0]
    assert request["path"] == "/2010-04-01/Accounts/AC123/Messages.json" and request["method"] == "POST"
    assert request["form"]["To"] == ALICE_PHONE and "support-bot" in request["form"]["Body"]
    assert request["headers"]["Authorization"] == "Basic QUMxMjM6dG9rZW4="
    sms = next(r for r in notify_training(alice) if r.channel == "sms")
    assert services.outbox_send(message_id=sms.pk)[0] == "failed"
    sms.refresh_from_db()
    assert "21211" in sms.last_error


def test_a_number_shared_by_two_users_gets_at_most_its_texts_an_hour(alice, bob, settings, fake_provider):
    """SMS_PER_NUMBER_PER_HOUR counts every account's texts to a number: over it a text is not sent, and its row
    says why; phone codes to it are refused too; an hour later it receives texts again."""
    settings.SMS_BACKEND, settings.TWILIO_API_BASE = "twilio", fake_provider.url
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN, settings.TWILIO_FROM = "AC123", "token", "+15005550006"
    settings.SMS_PER_NUMBER_PER_HOUR = 3
    fake_provider.default = (201, {"sid": "SM1"})
    verify_phone(alice)
    verify_phone(bob)  # the same number
    texts = [next(r for r in notify_training(user) if r.channel == "sms") for user in (alice, bob, alice, bob)]
    assert [services.outbox_send(message_id=sms.pk)[0] for sms in texts] == ["sent", "sent", "sent", "failed"]
    assert len(fake_provider.requests) == 3 and {r["form"]["To"] for r in fake_provider.requests} == {ALICE_PHONE}
    refused = OutboxMessage.objects.get(pk=texts[3].pk)
    assert refused.status == "failed" and refused.user == bob and refused.sent_at is None
    assert refused.last_error == (
        f"permanent: not sent: {ALICE_PHONE} received 3 texts in the last hour from all accounts, the limit per "
        "number (SMS_PER_NUMBER_PER_HOUR=3)"
    )
    # Email and in-app are not held back: the cap is the number's.
    assert send_all().count("sent") == 8
    # A phone code to the number is a text too: refused, whoever asks; another number is not held back.
    with pytest.raises(services.PhoneError) as error:
        services.phone_code_send(user=bob, phone=ALICE_PHONE)
    assert error.value.code == "number_cap"
    assert error.value.message == (
        f"{ALICE_PHONE} has received as many texts as it may in an hour. Try again in 60 min, or use another number."
    )
    assert services.phone_code_send(user=bob, phone="+8613900139000")
    assert len(fake_provider.requests) == 4
    # The wait counts from the oldest text: 45 minutes ago, it ends in 15; an hour later the number is open again.
    sent = OutboxMessage.objects.filter(channel="sms", status="sent")
    sent.update(send_started_at=timezone.now() - timedelta(minutes=45))
    with pytest.raises(services.PhoneError) as error:
        services.phone_code_send(user=bob, phone=ALICE_PHONE)
    assert "Try again in 15 min" in error.value.message
    # With the cap lowered to 2, two of the three must leave the window first: sent 50, 40, 30 minutes ago → 20 min.
    for pk, minutes in zip(sent.order_by("pk").values_list("pk", flat=True), (50, 40, 30), strict=True):
        OutboxMessage.objects.filter(pk=pk).update(send_started_at=timezone.now() - timedelta(minutes=minutes))
    settings.SMS_PER_NUMBER_PER_HOUR = 2
    assert services.number_texts(phone=ALICE_PHONE).minutes == 20
    settings.SMS_PER_NUMBER_PER_HOUR = 3
    sent.update(send_started_at=timezone.now() - timedelta(hours=1, seconds=1))
    sms = next(r for r in notify_training(bob) if r.channel == "sms")
    assert services.outbox_send(message_id=sms.pk)[0] == "sent"
    assert services.phone_code_send(user=alice, phone=ALICE_PHONE)  # 2 of 3 this hour
    assert services.phone_code_send(user=bob, phone=ALICE_PHONE)  # 3 of 3
    with pytest.raises(services.PhoneError) as error:
        services.phone_code_send(user=alice, phone=ALICE_PHONE)  # her own limits (1 code of 3) are not it
    assert error.value.code == "number_cap"
    # 0 turns the cap off.
    settings.SMS_PER_NUMBER_PER_HOUR = 0
    assert services.phone_code_send(user=bob, phone=ALICE_PHONE)


def test_a_text_another_worker_is_sending_counts_and_one_not_sent_does_not(alice, bob, settings):
    settings.SMS_PER_NUMBER_PER_HOUR = 1
    verify_phone(alice)
    verify_phone(bob)
    sending = next(r for r in notify_training(alice) if r.channel == "sms")
    OutboxMessage.objects.filter(pk=sending.pk).update(status="sending", send_started_at=timezone.now())
    assert services.number_texts(phone=ALICE_PHONE).over  # handed to the backend by another worker just now
    assert not services.number_texts(phone=ALICE_PHONE, exclude_message=sending.pk).over  # itself, when it checks
    sms = next(r for r in notify_training(bob) if r.channel == "sms")
    assert services.outbox_send(message_id=sms.pk)[0] == "failed"
    OutboxMessage.objects.filter(pk=sending.pk).update(status="failed")  # it did not go out after all
    sms = next(r for r in notify_training(bob) if r.channel == "sms")
    assert services.outbox_send(message_id=sms.pk)[0] == "sent"
    assert SentSms.objects.filter(to=ALICE_PHONE).count() == 1


def test_texts_a_number_received_are_counted_across_accounts_in_the_cap_in_chinese(alice, bob, settings):
    from django.utils import translation

    settings.SMS_PER_NUMBER_PER_HOUR = 1
    services.phone_code_send(user=alice, phone=ALICE_PHONE)
    with translation.override("zh-hans"), pytest.raises(services.PhoneError) as error:
        services.phone_code_send(user=bob, phone=ALICE_PHONE)
    assert error.value.code == "number_cap"
    assert error.value.message == f"{ALICE_PHONE} 在一小时内收到的短信已达上限。请在 60 分钟后重试，或使用其他号码。"


def test_transient_errors_back_off_exponentially_then_give_up(alice, settings, fake_provider):
    _aliyun(settings, fake_provider)
    settings.NOTIFICATIONS_MAX_ATTEMPTS, settings.NOTIFICATIONS_RETRY_BASE = 3, 10
    fake_provider.default = (500, {"Code": "isp.SYSTEM_ERROR"})
    verify_phone(alice)
    sms = next(r for r in notify_training(alice) if r.channel == "sms")
    delays = []
    for _ in range(3):
        OutboxMessage.objects.filter(pk=sms.pk).update(next_attempt_at=timezone.now())
        delays.append(services.outbox_send(message_id=sms.pk))
    assert delays == [("retry", 10), ("retry", 20), ("failed", 0)]


# --- phone binding ----------------------------------------------------------------


def _last_code(user) -> str:
    return SentSms.objects.filter(user=user).latest("id").body.split()[4].rstrip(".")


def test_phone_binding_with_wrong_expired_and_too_many_codes(alice_client, alice):
    send = reverse("notifications:phone_send")
    verify = reverse("notifications:phone_verify")
    assert alice_client.post(send, {"phone": "138 0013 8000"}).status_code == 302
    code = _last_code(alice)
    assert len(code) == 6 and code.isdigit()
    verification = PhoneVerification.objects.get(user=alice)
    assert code not in verification.code_hash and len(verification.code_hash) == 64  # stored hashed
    wrong = "000000" if code != "000000" else "111111"
    page = alice_client.post(verify, {"code": wrong}, follow=True).content.decode()
    assert "4 tries left" in page
    alice.refresh_from_db()
    assert alice.phone_verified_at is None
    for _ in range(4):
        alice_client.post(verify, {"code": wrong})
    page = alice_client.post(verify, {"code": code}, follow=True).content.decode()
    assert "Too many wrong codes" in page  # even the right code, after five tries
    alice.refresh_from_db()
    assert alice.phone_verified_at is None
    # A new code, expired.
    alice_client.post(send, {"phone": ALICE_PHONE})
    code = _last_code(alice)
    PhoneVerification.objects.filter(user=alice).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert "has expired" in alice_client.post(verify, {"code": code}, follow=True).content.decode()
    # A new code, right.
    alice_client.post(send, {"phone": ALICE_PHONE})
    page = alice_client.post(verify, {"code": _last_code(alice)}, follow=True).content.decode()
    assert "is verified" in page and 'data-testid="phone-verified"' in page
    alice.refresh_from_db()
    assert alice.phone == ALICE_PHONE and alice.phone_verified_at is not None


def test_codes_are_limited_per_user_and_per_number_and_say_which_limit(alice_client, alice, bob, settings):
    """Each user is counted alone: alice's codes to her number never hold back bob's code to it."""
    from django.test import Client

    settings.PHONE_CODES_PER_USER_PER_HOUR, settings.PHONE_CODES_PER_NUMBER_PER_HOUR = 5, 3
    send = reverse("notifications:phone_send")
    other = "+8613900139000"
    for _ in range(3):
        alice_client.post(send, {"phone": ALICE_PHONE})
    page = alice_client.post(send, {"phone": ALICE_PHONE}, follow=True).content.decode()
    limit = f"Too many codes to {ALICE_PHONE}: 3 sent in the last hour, the limit per number. Try again in 60 min"
    assert limit in page
    assert SentSms.objects.filter(user=alice).count() == 3
    # Another number is still open to her, up to the limit per account.
    for _ in range(2):
        alice_client.post(send, {"phone": other})
    page = alice_client.post(send, {"phone": "+8613700137000"}, follow=True).content.decode()
    assert "Too many codes for your account: 5 sent in the last hour, the limit per account." in page
    assert SentSms.objects.filter(user=alice).count() == 5

    # Bob's code to the same number goes out: alice's sends are hers.
    client = Client()
    client.force_login(bob)
    page = client.post(send, {"phone": ALICE_PHONE}, follow=True).content.decode()
    assert "A code was sent" in page
    assert SentSms.objects.filter(user=bob, to=ALICE_PHONE).count() == 1
    assert "Too many codes" not in client.post(send, {"phone": other}, follow=True).content.decode()

    # The wait counts from alice's oldest send: 20 minutes ago, it ends in 40.
    PhoneVerification.objects.filter(user=alice).update(created_at=timezone.now() - timedelta(minutes=20))
    page = alice_client.post(send, {"phone": ALICE_PHONE}, follow=True).content.decode()
    assert "Try again in 40 min" in page
    # An hour later alice may send again.
    PhoneVerification.objects.filter(user=alice).update(created_at=timezone.now() - timedelta(hours=1, seconds=1))
    page = alice_client.post(send, {"phone": ALICE_PHONE}, follow=True).content.decode()
    assert "A code was sent" in page, page[page.find('class="message') :][:300]
    assert SentSms.objects.filter(user=alice).count() == 6


def test_zero_turns_the_phone_code_limits_off(alice, settings):
    settings.PHONE_CODES_PER_USER_PER_HOUR, settings.PHONE_CODES_PER_NUMBER_PER_HOUR = 0, 0
    settings.SMS_PER_NUMBER_PER_HOUR = 0  # the number's own cap, across accounts, is another setting
    for _ in range(8):
        services.phone_code_send(user=alice, phone=ALICE_PHONE)
    assert PhoneVerification.objects.filter(user=alice, phone=ALICE_PHONE).count() == 8


def test_phone_code_limits_in_chinese(alice, settings):
    from django.utils import translation

    settings.PHONE_CODES_PER_USER_PER_HOUR, settings.PHONE_CODES_PER_NUMBER_PER_HOUR = 5, 1
    services.phone_code_send(user=alice, phone=ALICE_PHONE)
    with translation.override("zh-hans"), pytest.raises(services.PhoneError) as error:
        services.phone_code_send(user=alice, phone=ALICE_PHONE)
    assert error.value.code == "number_limit"
    assert error.value.message.startswith(f"发送到 {ALICE_PHONE} 的验证码过多")


def test_account_page_shows_the_phone_binding_and_the_development_sms(alice_client, alice):
    alice_client.post(reverse("notifications:phone_send"), {"phone": ALICE_PHONE})
    page = alice_client.get(reverse("console:account")).content.decode()
    assert 'id="phone-binding"' in page and 'id="phone-code"' in page
    assert "Your verification code is" in page  # the development backend's SMS, for the user to see


# --- the notification centre and the badge -------------------------------------


def _notes(user, n: int, **extra):
    now = timezone.now()
    return Notification.objects.bulk_create(
        Notification(
            user=user,
            event="training.succeeded",
            event_key=f"k{user.pk}-{i}",
            title=f"{user} note {i}",
            body="b",
            url="/console/jobs/",
            created_at=now,
            **extra,
        )
        for i in range(n)
    )


def test_second_user_sees_none_of_the_first_users_notifications(alice_client, alice, bob):
    from django.test import Client

    client = Client()
    [mine] = _notes(alice, 1)
    [theirs] = _notes(bob, 1)
    page = alice_client.get(reverse("notifications:centre")).content.decode()
    assert "alice note 0" in page and "bob note 0" not in page
    assert alice_client.post(reverse("notifications:mark_read", args=[theirs.pk])).status_code == 404
    assert alice_client.get(reverse("notifications:open", args=[theirs.event_key])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.read_at is None
    alice_client.post(reverse("notifications:mark_all_read"))
    mine.refresh_from_db(), theirs.refresh_from_db()
    assert mine.read_at is not None and theirs.read_at is None
    client.force_login(bob)
    assert 'data-testid="unread-count">1<' in client.get(reverse("notifications:badge")).content.decode()


def test_short_link_marks_read_and_goes_to_the_page(alice_client, alice):
    notify_training(alice)
    send_all()
    note = Notification.objects.get(user=alice)
    response = alice_client.get(reverse("notifications:open", args=[note.event_key]))
    assert response.status_code == 302 and response["Location"].endswith("/console/jobs/ftjob-0123456789abcdef0123/")
    note.refresh_from_db()
    assert note.read_at is not None


def test_centre_holds_at_10000_rows_with_a_fixed_number_of_queries(alice_client, alice, bob, django_assert_num_queries):
    _notes(alice, 10_000)
    _notes(bob, 50)
    url = reverse("notifications:centre")
    with django_assert_num_queries(6) as first:
        page = alice_client.get(url)
    assert page.status_code == 200 and page.content.decode().count('data-testid="notification"') == 20
    assert "(10000 in all)" in page.content.decode() or "(10,000 in all)" in page.content.decode()
    with django_assert_num_queries(len(first.captured_queries)):
        last = alice_client.get(url + "?page=500&show=unread")
    assert "alice note 0" in last.content.decode()
    alice_client.post(reverse("notifications:mark_read", args=[Notification.objects.filter(user=alice).first().pk]))
    badge = alice_client.get(reverse("notifications:badge")).content.decode()
    assert ">99+<" in badge and "9999 unread notifications" in badge


def test_health_counts_stuck_messages(alice, admin_client):
    notify_training(alice)
    OutboxMessage.objects.update(next_attempt_at=timezone.now() - timedelta(minutes=11))
    assert services.outbox_stuck_count() == 2
    body = admin_client.get("/healthz").json()  # the details are for staff
    assert body["checks"]["notifications"]["stuck_over_10_minutes"] == 2


def test_admin_resend_sends_again_with_a_new_key(admin_client, alice):
    notify_training(alice)
    send_all()
    email = OutboxMessage.objects.get(channel="email")
    old_key = email.key
    response = admin_client.post(
        reverse("admin:notifications_outboxmessage_changelist"),
        {"action": "resend", "_selected_action": [email.pk]},
        follow=True,
    )
    assert "1 message queued again" in response.content.decode()
    email.refresh_from_db()
    assert email.status == "pending" and email.key != old_key
    assert services.outbox_send(message_id=email.pk)[0] == "sent"


# --- the events wired in jobs and datasets ------------------------------------------


def _job(user, **extra):
    from jobs.models import FineTuningJob
    from modelcards.models import BaseModel

    from .jobs_support import chat_lines, make_dataset

    return FineTuningJob.objects.create(
        owner=user,
        base_model=BaseModel.objects.order_by("pk").first(),
        training_dataset=make_dataset(user, chat_lines(4)),
        suffix="support-bot",
        fine_tuned_model=f"ft:base:support-bot:{extra.pop('tag', 'a1')}",
        **extra,
    )


def test_training_outcomes_notify_the_owner_in_the_same_transaction(alice, django_capture_on_commit_callbacks):
    from types import SimpleNamespace

    from jobs.runner import _finish_succeeded
    from jobs.states import job_cancel, job_fail

    verify_phone(alice)
    failed, cancelled, succeeded = _job(alice, tag="f"), _job(alice, tag="c"), _job(alice, tag="s", status="running")
    with django_capture_on_commit_callbacks(execute=False):
        job_fail(job=failed, code="oom", message="out of memory")
        job_fail(job=failed, code="oom", message="again")  # already ended: nobody is told twice
        job_cancel(job=cancelled)
        result = SimpleNamespace(
            trained_tokens=100,
            epochs_completed=1,
            final_loss=1.0,
            final_eval_loss=None,
            tokens_per_second=10.0,
            steps=3,
            output_dir="/nowhere",
        )
        assert _finish_succeeded(succeeded, result, "/nowhere") == "succeeded"
    by_event = {}
    for row in OutboxMessage.objects.filter(user=alice):
        by_event.setdefault(row.event, set()).add(row.channel)
    assert by_event == {
        e: {"in_app", "email", "sms"} for e in ("training.failed", "training.cancelled", "training.succeeded")
    }
    email = OutboxMessage.objects.get(event="training.failed", channel="email")
    assert "out of memory" in email.body and f"/console/jobs/{failed.public_id}/" in email.body
    ok = OutboxMessage.objects.get(event="training.succeeded", channel="in_app")
    assert ok.body == f"Task {succeeded.public_id} finished: model {succeeded.fine_tuned_model} is ready to use."


def test_a_lost_worker_tells_the_owner_the_task_resumes(alice, django_capture_on_commit_callbacks):
    from jobs.services import jobs_repair

    job = _job(alice, status="running", heartbeat_at=timezone.now() - timedelta(minutes=5), attempts=1)
    with django_capture_on_commit_callbacks(execute=False):
        assert jobs_repair(heartbeat_timeout=60)["requeued"] == 1
    [row] = OutboxMessage.objects.filter(user=alice)
    assert row.event == "training.requeued" and row.channel == "in_app" and job.public_id in row.body


def test_dataset_with_errors_notifies_its_owner(alice, django_capture_on_commit_callbacks):
    from datasets.models import Dataset
    from datasets.services import dataset_validate

    from .jobs_support import chat_lines, make_dataset

    dataset = make_dataset(alice, [*chat_lines(1), {"oops": 1}], status="uploaded")
    with django_capture_on_commit_callbacks(execute=True):
        dataset_validate(dataset_id=dataset.pk)
    assert Dataset.objects.get(pk=dataset.pk).status == "invalid"
    [row] = OutboxMessage.objects.filter(user=alice, channel="in_app")
    assert row.event == "dataset.invalid" and row.url.endswith(f"/console/datasets/{dataset.public_id}/")
    # One error reads as one ("errors found: 1"), never "1 errors".
    assert f"Validation of {dataset.public_id} finished; errors found: 1. Fix the file" in row.body, row.body
