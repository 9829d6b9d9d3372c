"""ESP event webhooks on the reader desk: `POST /webhooks/{provider}` (bounces, complaints).

    postmark   HTTP basic auth (postmark.py)
    resend     Svix signatures, HMAC-SHA256 (resend.py)
    ses        SES notifications through SNS: SNS signatures, subscription confirmed (ses.py)
    mailgun    HMAC-SHA256 of timestamp + single-use token (mailgun.py)
    sendgrid   ECDSA P-256 signed Event Webhook (sendgrid.py)

Each request is checked before anything in it is acted on: a bad password or signature gets
401 JSON and records nothing (and counts as a bad token for the desk's slow-down); a body
that is not the ESP's JSON 400; a provider whose webhook setting is not there 404. A good
one is recorded in the desk's store through the group commit, once per event id
(spark_mail/audience/events.py: a replay changes nothing), and answered 200 with what it
changed. ESPs retry what does not get a 2xx, so only a store failure answers 503.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse

from spark_mail.audience.events import record_events
from spark_mail.desk.guard import client_address
from spark_mail.desk.webhooks.base import Receiver, forged
from spark_mail.desk.webhooks.mailgun import MailgunReceiver
from spark_mail.desk.webhooks.postmark import PostmarkReceiver
from spark_mail.desk.webhooks.resend import ResendReceiver
from spark_mail.desk.webhooks.sendgrid import SendgridReceiver
from spark_mail.desk.webhooks.ses import SesReceiver, SnsPolicy
from spark_mail.errors import WebhookRefused

if TYPE_CHECKING:
    from spark_mail.clock import Clock
    from spark_mail.config import Settings
    from spark_mail.desk.commits import GroupCommit
    from spark_mail.desk.guard import Guard

__all__ = ["ROUTE", "SnsPolicy", "Webhooks", "configured", "receivers"]

log = logging.getLogger("spark_mail.desk")
ROUTE = "/webhooks/{provider}"


def receivers(
    settings: Settings, clock: Clock, sns_policy: SnsPolicy | None = None
) -> dict[str, Receiver]:
    """Every ESP's receiver, by provider name; ConfigError for a webhook setting that
    cannot work (a SendGrid key that is not one), found before the desk starts."""
    found: list[Receiver] = [
        PostmarkReceiver(settings, clock),
        ResendReceiver(settings, clock),
        SesReceiver(settings, clock, policy=sns_policy),
        MailgunReceiver(settings, clock),
        SendgridReceiver(settings, clock),
    ]
    return {receiver.name: receiver for receiver in found}


def configured(settings: Settings, clock: Clock) -> list[str]:
    """The providers whose webhook is set up (their routes answer)."""
    return [name for name, receiver in receivers(settings, clock).items() if receiver.configured]


class Webhooks:
    """The receivers of every ESP, and the route that hands each request to its own."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        commits: GroupCommit,
        guard: Guard,
        sns_policy: SnsPolicy | None = None,
    ) -> None:
        self.clock = clock
        self.commits = commits
        self.guard = guard
        self.receivers = receivers(settings, clock, sns_policy)
        ses = self.receivers["ses"]
        assert isinstance(ses, SesReceiver)
        self.ses = ses

    async def handle(self, request: Request) -> JSONResponse:
        client = client_address(request.scope)
        self.guard.check_bad_tokens(client)
        name = str(request.path_params["provider"])
        receiver = self.receivers.get(name)
        try:
            if receiver is None or not receiver.configured:
                raise WebhookRefused(404, "Not set up", f"no webhook for {name!r} is set up here")
            delivery = await receiver.receive(request.headers, await request.body())
            if delivery.confirm_url:
                await self.ses.confirm(delivery.confirm_url)
                log.info("ses: SNS subscription confirmed")
                return JSONResponse({"status": "subscribed"})
            operation = record_events(delivery.events, self.clock.now(), token=delivery.token)
            result = await self.commits.run(operation, durable=True)
            if result.token_reused:
                raise forged("this signature's token was used before (a replay)")
        except WebhookRefused as refused:
            if refused.status == 401:
                self.guard.bad_token(client)
                log.warning("%s webhook refused: %s", name, refused.message)
            return JSONResponse({"error": refused.message}, status_code=refused.status)
        if result.suppressed:
            log.info("%s: %d addresses suppressed", name, len(result.suppressed))
        return JSONResponse({"status": "ok", **result.to_json()})
