"""A local SMTP listener for scripts/run: accepts every message on
127.0.0.1:PORT and writes it to DIR as NAME.eml (as received) and NAME.txt
(From, To, Subject, Message-ID and the plain-text part, decoded), NAME
sortable by arrival. Runs until SIGTERM. Not a mail server: nothing is relayed.
    python3 scripts/mail_sink.py PORT DIR
"""
import email
import email.policy
import itertools
import os
import signal
import sys
import threading
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        name = "%s-%04d" % (time.strftime("%Y%m%d-%H%M%S"), next(self.counter))
        path = os.path.join(self.directory, name)
        with open(path + ".eml", "wb") as f:
            f.write(envelope.content)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        with open(path + ".txt", "w") as f:
            for header in ("From", "To", "Subject", "Message-ID"):
                f.write("%s: %s\n" % (header, msg.get(header, "")))
            f.write("\n" + (body.get_content() if body is not None else ""))
        return "250 Message accepted"


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Sink(directory), hostname="127.0.0.1", port=port)
    controller.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    print("listening on 127.0.0.1:%d, writing to %s" % (port, directory), flush=True)
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
