"""The tests' local SMTP server (aiosmtpd): TLS (STARTTLS or implicit) and
AUTH with one user, printing each accepted message as a JSON line on
stdout, after a first line "ready". Mail never leaves the machine.

usage: receiver.py PORT CERT KEY MODE USER PASSWORD   (MODE: starttls | tls)
"""
import json
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd 1.4 warns about its own use of a deprecated session field.
warnings.filterwarnings("ignore", category=DeprecationWarning)
port, cert, key, mode, user, password = sys.argv[1:7]


class Handler:
    async def handle_DATA(self, server, session, envelope):
        print(json.dumps({
            "user": session.auth_data.decode() if isinstance(session.auth_data, bytes) else None,
            # STARTTLS sets session.ssl; implicit TLS shows on the transport.
            "tls": session.ssl is not None
                   or server.transport.get_extra_info("ssl_object") is not None,
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }), flush=True)
        return "250 2.0.0 accepted by the test receiver"


def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login.decode() == user
          and auth_data.password.decode() == password)
    # handled=False: aiosmtpd answers a failure with its standard 535.
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login if ok else None)


context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
common = dict(hostname="127.0.0.1", port=int(port), authenticator=authenticate)
if mode == "starttls":
    controller = Controller(Handler(), tls_context=context, require_starttls=True,
                            auth_require_tls=True, **common)
else:
    controller = Controller(Handler(), ssl_context=context, auth_require_tls=False, **common)
controller.start()
print("ready", flush=True)
# Until the test closes stdin (or is killed).
threading.Event().wait() if sys.stdin is None else sys.stdin.read()
controller.stop()
