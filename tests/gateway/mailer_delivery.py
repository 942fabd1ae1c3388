"""The gateway's outbox mailer against a real SMTP listener on loopback
(aiosmtpd): invitations and sub-user credentials arrive with the right
recipient, subject, secret, link and both alternatives; the listener down
then up; a 550; a gateway killed mid-batch and restarted; two gateways on one
outbox. Run by tests/suites/33_mailer.sh:
    python3 tests/gateway/mailer_delivery.py WORK_DIR
"""
import asyncio
import collections
import email
import email.policy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gwlib import GATEWAY, Gateway, case, finish, free_port, poll  # noqa: E402

from aiosmtpd.controller import Controller  # noqa: E402

BASE_URL = "https://app.example.test/"


class Recorder:
    """An SMTP handler that keeps every message it accepts. delay: seconds
    spent in DATA before answering; reject: recipients answered 550."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []  # (rcpt list, mail_from, email.message.EmailMessage)
        self.delay = 0.0
        self.reject = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.reject:
            return "550 5.1.1 <%s>: Recipient address rejected: no such user" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), envelope.mail_from, msg))
        return "250 Message accepted for delivery"

    def by_recipient(self, address):
        with self.lock:
            return [m for rcpt, _, m in self.messages if address in rcpt]

    def message_ids(self):
        with self.lock:
            return [m["Message-ID"] for _, _, m in self.messages]


recorder = Recorder()
smtp_port = free_port()
controller = None


def smtp_up():
    global controller
    controller = Controller(recorder, hostname="127.0.0.1", port=smtp_port)
    controller.start()


def smtp_down():
    global controller
    if controller:
        controller.stop()
        controller = None


def gateway_args(extra=None):
    return ["--smtp-url", "smtp://127.0.0.1:%d" % smtp_port, "--smtp-from", "noreply@tenancy.test",
            "--public-base-url", BASE_URL, "--smtp-poll-ms", "100", "--smtp-retry-base-ms", "200",
            "--smtp-retry-max-ms", "1000", "--smtp-timeout-ms", "5000", "--smtp-batch", "4"] + (extra or [])


def parts(msg):
    """(text, html) of a multipart/alternative message."""
    assert msg.get_content_type() == "multipart/alternative", msg.get_content_type()
    text = msg.get_body(preferencelist=("plain",)).get_content()
    html = msg.get_body(preferencelist=("html",)).get_content()
    return text, html


def sent_all(gw, where):
    return gw.sql("SELECT count(*) FILTER (WHERE sent_at IS NULL AND failed_at IS NULL) = 0 "
                  "AND count(*) > 0 FROM tenancy.outbox WHERE %s" % where) == "t"


smtp_up()
for leftover in ("gw-mailer.log", "gw-mailer.log.second"):  # the counters case reads this run's log
    if os.path.exists(os.path.join(sys.argv[1], leftover)):
        os.remove(os.path.join(sys.argv[1], leftover))
gw = Gateway(sys.argv[1], "mailer", gateway_args=gateway_args())
second = None
try:
    main_account, _ = gw.main_account("Mail Reseller", "owner@mail.test", "a long password 1")
    key = gw.api_key(main_account)
    gw.sql("UPDATE tenancy.accounts SET branding = '{\"name\": \"Acme Voice\", "
           "\"logo_url\": \"https://cdn.acme.test/logo.png\", \"primary_color\": \"#123456\"}' "
           "WHERE public_id = '%s'" % main_account)
    child = gw.sql("SELECT tenancy.authenticate('%s') IS NOT NULL; "
                   "SELECT tenancy.create_account('%s', 'Clinic <North>')" % (key, main_account)).split("\n")[-1]
    gw.sql("UPDATE tenancy.accounts SET branding = '{\"primary_color\": \"#abcdef\"}' "
           "WHERE public_id = '%s'" % child)

    def in_context(sql):
        return gw.sql("SELECT tenancy.authenticate('%s') IS NOT NULL; %s" % (key, sql)).split("\n")[-1]

    def invite(address, account=None, role="member"):
        in_context("SELECT tenancy.invite('%s', '%s', '%s')" % (account or child, address, role))
        return int(gw.sql("SELECT max(id) FROM tenancy.outbox WHERE recipient = '%s'" % address))

    installation = gw.sql("SELECT tenancy._mail_message_id(0)")[len("<outbox-0."):-len("@tenancy>")]

    @case("invitation_arrives")
    def _():
        oid = invite("ivy@mail.test", role="admin")
        msgs = poll(lambda: recorder.by_recipient("ivy@mail.test"), 20, "the invitation")
        assert len(msgs) == 1, msgs
        m = msgs[0]
        assert m["To"] == "ivy@mail.test" and m["From"] == "noreply@tenancy.test", (m["To"], m["From"])
        assert m["Subject"] == "Invitation to Clinic <North>", m["Subject"]
        assert m["Message-ID"] == "<outbox-%d.%s@tenancy>" % (oid, installation), m["Message-ID"]
        text, html = parts(m)
        token = re.search(r"(tni_\d+_\d+_[A-Za-z0-9_-]{43})", text).group(1)
        link = "https://app.example.test/invitations/accept?token=" + token
        assert link in text and ('href="%s"' % link) in html, (text, html)
        assert "as admin" in text and "Clinic &lt;North&gt;" in html, (text, html)
        # the child's colour, the parent's name and logo (nearest ancestor's where unset)
        assert "#abcdef" in html and "https://cdn.acme.test/logo.png" in html and "Acme Voice" in html, html
        assert "Acme Voice" in text, text
        # the token is the one the database expects
        session = gw.sql("SELECT tenancy.accept_invitation('%s', 'Ivy', 'ivy password 1')" % token)
        assert session.startswith("tns_"), session

    @case("sub_user_activation_arrives")
    def _():
        in_context("SELECT tenancy.create_sub_user('sam@mail.test', 'Sam', 'Stone', 'initial pw 1')")
        sub = gw.sql("SELECT public_id FROM tenancy.sub_users WHERE email = 'sam@mail.test'")
        in_context("SELECT tenancy.activate_sub_user('%s')" % sub)
        msgs = poll(lambda: recorder.by_recipient("sam@mail.test"), 20, "the credentials")
        assert len(msgs) == 1, msgs
        m = msgs[0]
        assert m["Subject"] == "Your access to Mail Reseller", m["Subject"]
        text, html = parts(m)
        password = re.search(r"temporary password: (\S+)", text).group(1)
        assert password in html and "https://app.example.test/login" in text, (text, html)
        assert "owner@mail.test" in text and "Hello Sam Stone" in text, text
        assert "#123456" in html, html  # the main account's colour
        token = gw.sql("SELECT tenancy.login_sub_user('owner@mail.test', 'sam@mail.test', '%s')" % password)
        assert token.startswith("tns_"), token

    @case("body_blanked_after_sending")
    def _():
        poll(lambda: sent_all(gw, "recipient IN ('ivy@mail.test', 'sam@mail.test')"), 20, "marked sent")
        rows = gw.sql("SELECT count(*) FROM tenancy.outbox WHERE recipient IN ('ivy@mail.test', "
                      "'sam@mail.test') AND (body <> '' OR data IS NOT NULL OR sent_at IS NULL)")
        assert rows == "0", rows

    @case("outbox_unreadable_to_clients")
    def _():
        gw.sql("SELECT tenancy.create_client('mail_client')")
        r = subprocess.run(["psql", "-X", "-At", "-h", gw.cluster, "-p", str(gw.pg_port), "-U",
                            "mail_client", "-d", "postgres", "-c",
                            "SELECT count(*) FROM tenancy.outbox"], capture_output=True, text=True)
        assert r.returncode != 0 and "permission denied" in r.stderr, (r.stdout, r.stderr)
        r = subprocess.run(["psql", "-X", "-At", "-h", gw.cluster, "-p", str(gw.pg_port), "-U",
                            "mail_client", "-d", "postgres", "-c",
                            "SELECT count(*) FROM tenancy.mail_claim('x', 1, '1 minute')"],
                           capture_output=True, text=True)
        assert r.returncode != 0 and "for the gateway only" in r.stderr, (r.stdout, r.stderr)

    @case("killed_mid_batch_nothing_lost")
    def _():
        recorder.delay = 0.4  # a message takes 0.4 s: the kill lands mid-batch
        before = len(recorder.message_ids())
        ids = [invite("kill%d@mail.test" % i) for i in range(8)]
        poll(lambda: len(recorder.message_ids()) - before >= 2, 30, "two of the batch delivered")
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        recorder.delay = 0.0
        gw.start(gateway_args())
        where = "id IN (%s)" % ",".join(map(str, ids))
        poll(lambda: sent_all(gw, where), 60, "all sent after the restart")
        counts = collections.Counter()
        for i, oid in enumerate(ids):
            got = recorder.by_recipient("kill%d@mail.test" % i)
            assert got, "kill%d lost" % i
            # a duplicate carries the same Message-ID
            assert {m["Message-ID"] for m in got} == {"<outbox-%d.%s@tenancy>" % (oid, installation)}, got
            counts[oid] = len(got)
        duplicates = sum(n - 1 for n in counts.values())
        print("# killed mid-batch: %d messages, %d duplicate(s), each with its Message-ID"
              % (len(ids), duplicates), flush=True)
        assert duplicates <= 1, counts  # at most the message in flight

    @case("listener_down_then_up_everything_once")
    def _():
        smtp_down()
        ids = [invite("down%d@mail.test" % i) for i in range(3)]
        where = "id IN (%s)" % ",".join(map(str, ids))
        # every row failed at least once (connection refused) and is retried
        poll(lambda: gw.sql("SELECT bool_and(attempts >= 1 AND sent_at IS NULL AND failed_at IS NULL "
                            "AND last_error IS NOT NULL) FROM tenancy.outbox WHERE %s" % where) == "t",
             30, "temporary failures recorded")
        smtp_up()
        poll(lambda: sent_all(gw, where), 30, "all sent once the listener is back")
        for i, oid in enumerate(ids):
            got = recorder.by_recipient("down%d@mail.test" % i)
            assert len(got) == 1, (i, len(got))
            assert got[0]["Message-ID"] == "<outbox-%d.%s@tenancy>" % (oid, installation), got[0]["Message-ID"]

    @case("permanent_550_failed_and_owner_reads_it")
    def _():
        recorder.reject.add("nobody@mail.test")
        oid = invite("nobody@mail.test")
        poll(lambda: gw.sql("SELECT failed_at IS NOT NULL FROM tenancy.outbox WHERE id = %d" % oid) == "t",
             20, "marked failed")
        row = gw.sql("SELECT attempts, body = '' AND data IS NULL, sent_at IS NULL, last_error "
                     "FROM tenancy.outbox WHERE id = %d" % oid)
        attempts, blank, unsent, error = row.split("|")
        assert attempts == "1" and blank == "t" and unsent == "t" and error.startswith("550"), row
        assert recorder.by_recipient("nobody@mail.test") == []
        # the owner, as a client role in context, reads the failure (never the body)
        r = subprocess.run(["psql", "-X", "-At", "-h", gw.cluster, "-p", str(gw.pg_port), "-U",
                            "mail_client", "-d", "postgres", "-c",
                            "SELECT tenancy.authenticate('%s') IS NOT NULL; SELECT recipient || '|' || "
                            "subject || '|' || error FROM tenancy.outbox_failures" % key],
                           capture_output=True, text=True)
        lines = r.stdout.strip().split("\n")
        assert r.returncode == 0 and len(lines) == 2, (r.stdout, r.stderr)
        recipient, subject, err = lines[1].split("|")
        assert recipient == "nobody@mail.test" and subject == "Invitation to Clinic <North>", lines
        assert "550" in err and "Recipient address rejected" in err, err

    @case("two_gateways_no_duplicate")
    def _():
        global second
        port = free_port()
        second = subprocess.Popen(
            [GATEWAY, "--listen", "127.0.0.1", "--port", str(port), "--database-url", gw.conninfo,
             "--pool-size", "4"] + gateway_args(),
            stdout=open(gw.log + ".second", "ab"), stderr=open(gw.err + ".second", "ab"))
        poll(lambda: "mailer started" in open(gw.log + ".second").read(), 20, "second mailer")
        recorder.delay = 0.05
        before = set(recorder.message_ids())
        in_context("SELECT tenancy.invite('%s', format('pair%%s@mail.test', g), 'member') "
                   "FROM generate_series(1, 24) g" % child)
        where = "recipient LIKE 'pair%@mail.test'"
        poll(lambda: sent_all(gw, where), 60, "all 24 sent")
        new = [i for i in recorder.message_ids() if i not in before]
        assert len(new) == 24 and len(set(new)) == 24, collections.Counter(new).most_common(3)
        recorder.delay = 0.0
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        logs = [open(gw.log).read(), open(gw.log + ".second").read()]
        claimers = [len(re.findall(r'"msg":"mail".*"outcome":"sent"', log)) for log in logs]
        print("# two gateways: sends in each log (all runs of the first): %s" % claimers, flush=True)

    @case("counters_at_stop")
    def _():
        # the run since the restart: 3 refused then sent, 1 rejected, 24 shared
        gw.proc.terminate()
        gw.proc.wait(timeout=30)
        stops = [json.loads(line) for line in open(gw.log) if '"mailer stopped"' in line]
        assert len(stops) == 1, stops  # the killed run never got to say it stopped
        last = stops[0]
        assert last["retried"] >= 3 and last["failed"] == 1 and last["sent"] >= 3, last
finally:
    if second and second.poll() is None:
        second.kill()
    gw.stop()
    smtp_down()
sys.exit(finish())
