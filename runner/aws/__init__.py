"""shardmap on AWS Step Functions: the Lambda handler, deployment and execution following.

Nothing here imports boto3 at import time; :mod:`runner.aws.deploy` and
:mod:`runner.aws.stepfunctions` import it when they are used, so the Lambda handler and local
runs need no AWS SDK. :mod:`runner.aws.checks` (``check_asl``, ``asl_validator``) checks a
definition before it is deployed.
"""

from typing import Any

from runner.aws.handler import lambda_handler

__all__ = ["AslValidatorMissing", "Problem", "asl_validator", "check_asl", "lambda_handler"]

# Imported on first use: `runner.aws.check_asl` costs nothing until called.
_LAZY = {
    "AslValidatorMissing": "runner.aws.checks",
    "Problem": "runner.aws.checks",
    "asl_validator": "runner.aws.checks",
    "check_asl": "runner.aws.checks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
