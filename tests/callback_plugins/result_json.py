# A stdout callback for the tests: one JSON line per task result, untouched (diff, invocation and all),
# because ansible-core ships no JSON stdout callback.
import json

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "result_json"

    def _emit(self, result, status):
        data = dict(result._result)
        data["_status"] = status
        data["failed"] = status == "failed"
        self._display.display("RESULT " + json.dumps({"host": result._host.get_name(), "result": data},
                                                     default=str))

    def v2_runner_on_ok(self, result):
        self._emit(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._emit(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._emit(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._emit(result, "unreachable")
