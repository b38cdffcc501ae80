"""Signs Twilio webhook requests with the official Twilio Python library.

Reads JSON lines {"token", "url", "params": [[name, value], ...]} on stdin and
prints one JSON line {"signature", "valid"} for each: the X-Twilio-Signature
that Twilio would send, and whether the library's own validator accepts it.
tests/api/twilio.rs sends those requests to agentry.
"""

import json
import sys

from twilio.request_validator import RequestValidator

for line in sys.stdin:
    case = json.loads(line)
    validator = RequestValidator(case["token"])
    params = dict(case["params"])
    signature = validator.compute_signature(case["url"], params)
    valid = validator.validate(case["url"], params, signature)
    print(json.dumps({"signature": signature, "valid": valid}), flush=True)
