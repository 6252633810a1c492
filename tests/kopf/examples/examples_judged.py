"""Each of Kopf's 18 examples: how it is started and what it must do, judged by what it does to the
cluster (objects, status, Events, children, admission answers) and, where an example only prints or
logs, by the lines it says it prints; framework lines are matched in both spellings (Kopf's
``Handler 'fn' succeeded.``, opd's ``handler 'fn' for ns/name succeeded``, both logged with --verbose).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wild_kube import Kube, Missed, wait

KEX = ("kopf.dev/v1", "kopfexamples")


@dataclass
class Example:
    name: str  # the folder under examples/
    scenario: Callable[[Play], None]
    script: bool = False  # run as ``python example.py`` (it embeds the operator), not ``kopf run``
    also_default: bool = False  # also watch the namespace ``default`` (-n default)
    liveness: bool = False  # kopf run --liveness on a free port
    needs: tuple[str, ...] = ()  # modules the example imports beyond kopf: missing ones mean "not judged"


@dataclass
class Play:
    """What a scenario gets: the API, its namespace, the running example, a unique suffix."""

    kube: Kube
    namespace: str
    uid: str
    timeout: float
    output: Callable[[], str]
    gone: Callable[[], str | None]
    signal: Callable[[int], None]
    liveness: str = ""
    notes: list[str] = field(default_factory=list)

    def expect(self, what: str, condition: Callable[[], object], timeout: float | None = None) -> Any:
        return wait(condition, timeout or self.timeout, what, alive=self.gone)

    def logged(self, *lines: str, timeout: float | None = None) -> None:
        for line in lines:
            self.expect(f"the line {line!r} in its output", lambda line=line: line in self.output(), timeout)

    def handler(self, handler: str, outcome: str, timeout: float | None = None) -> None:
        pattern = re.compile(rf"[Hh]andler '{re.escape(handler)}'(?: for \S+)? {outcome}")
        self.expect(f"handler {handler!r}: {outcome}", lambda: pattern.search(self.output()), timeout)

    def kex(self, name: str, spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
        body = {"apiVersion": KEX[0], "kind": "KopfExample",
                "metadata": {"name": name, "namespace": self.namespace, **meta}, "spec": spec or {}}
        return dict(self.kube.create(body))

    def get(self, name: str) -> Any:
        return self.kube.get(*KEX, self.namespace, name)

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get(name) or {}).get("status") or {})

    def events(self, name: str) -> list[dict[str, Any]]:
        found = self.kube.call("GET", f"/api/v1/namespaces/{self.namespace}/events"
                                      f"?fieldSelector=involvedObject.name%3D{name}")
        return list((found or {}).get("items") or [])

    def delete_and_gone(self, name: str) -> None:
        self.kube.delete(*KEX, self.namespace, name)
        self.expect(f"{name} deleted (its finalizer released)", lambda: self.get(name) is None)


def obj_yaml(play: Play, name: str, **spec: Any) -> dict[str, Any]:
    """Kopf's examples/obj.yaml, under a name of this run."""
    return play.kex(name, {"duration": "1m", "field": "value", "items": ["item1", "item2"], **spec},
                    labels={"somelabel": "somevalue"}, annotations={"someannotation": "somevalue"})


def pods(play: Play, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
    return play.kube.list("v1", "pods", namespace or play.namespace, selector)


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return any(r["uid"] == owner["metadata"]["uid"] and r.get("controller") for r in refs)


def a_pod(name: str, namespace: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


# -- the examples ------------------------------------------------------------------------------------------------------

def minimal(play: Play) -> None:
    obj_yaml(play, "ex")
    play.expect("status.create_fn == {'message': 'hello world'}",
                lambda: play.status("ex").get("create_fn") == {"message": "hello world"})


def children(play: Play) -> None:
    parent = obj_yaml(play, "ex", field="from-the-parent")
    pod = play.expect("a Pod owned by the KopfExample (its controller)",
                      lambda: next((p for p in pods(play) if owned_by(p, parent)), None))
    env = pod["spec"]["containers"][0]["env"]
    if env != [{"name": "FIELD", "value": "from-the-parent"}]:
        raise Missed(f"the Pod's env is {env}, not FIELD=from-the-parent")
    play.expect("status.create_fn.children == [the Pod's uid]",
                lambda: play.status("ex").get("create_fn") == {"children": [pod["metadata"]["uid"]]})


def exceptions(play: Play) -> None:
    obj_yaml(play, "ex")
    play.handler("eventual_success_with_a_few_messages", "succeeded")
    for name in ("instant_failure_with_only_a_message", "instant_failure_with_traceback",
                 "eventual_failure_with_tracebacks"):
        play.handler(name, "(?:failed permanently|failed with an exception and will stop now)")


def events(play: Play) -> None:
    obj_yaml(play, "ex")

    def posted() -> Any:
        found = {(e["type"], e["reason"], e["message"]) for e in play.events("ex")}
        return found if len([f for f in found if f[1] == "SomeReason"]) >= 4 else None

    found = play.expect("4 Events with reason SomeReason on the object", posted)
    wanted = {("SomeType", "SomeReason", "Some message"), ("Normal", "SomeReason", "Some message"),
              ("Warning", "SomeReason", "Some message")}
    if not wanted <= found or not any(m.startswith("Some exception:") for _, r, m in found if r == "SomeReason"):
        raise Missed(f"the Events are {sorted(found)}")


def handlers(play: Play) -> None:
    obj_yaml(play, "ex")
    play.logged("CREATED 1st", "CREATED 2nd")
    play.kube.patch(*KEX, play.namespace, "ex", {"spec": {"field": "changed"}})
    play.logged("UPDATED", "FIELD CHANGED: value -> changed")
    play.delete_and_gone("ex")
    play.logged("DELETED 1st", "DELETED 2nd")


def peering(play: Play) -> None:
    obj_yaml(play, "ex")
    play.handler("create_fn", "succeeded")


def subhandlers(play: Play) -> None:
    obj_yaml(play, "ex")
    play.logged("=== Handling creation for item1. ===", "=== Handling creation for item2. ===")
    play.handler("create_fn", "succeeded")


def event_handlers(play: Play) -> None:
    obj_yaml(play, "ex")
    play.expect("'Event received:' with the object's name",
                lambda: re.search(r"Event received: .*'name': 'ex'", play.output()))
    play.logged("Oops!")


def testing(play: Play) -> None:
    obj_yaml(play, "ex")
    play.logged("Something was logged here.")


def builtins(play: Play) -> None:
    play.kube.create(a_pod("victim", play.namespace))
    play.logged("=== Pod killing happens in 30s.")
    play.expect("the Pod deleted by the operator (30 s after it saw it)",
                lambda: not pods(play), timeout=play.timeout + 30)


FILTERS_YES = ("Label is matching.", "Label is present.", "Label is absent.", "Label callback matching.",
               "Annotation is matching.", "Annotation is present.", "Annotation is absent.", "Filter satisfied.",
               "Field value is satisfied.", "Field presence is satisfied.", "Field daemon is satisfied.")
FILTERS_NO = ("Annotation callback mismatch.", "Filter not satisfied.", "Field value is not satisfied.",
              "Field presence is not satisfied.")


def filtering(play: Play) -> None:
    obj_yaml(play, "ex")
    play.logged(*FILTERS_YES)
    play.kube.patch(*KEX, play.namespace, "ex", {"spec": {"field": "changed"}})
    play.logged("Field change is satisfied.")
    wrong = [line for line in FILTERS_NO if line in play.output()]
    if wrong:
        raise Missed(f"handlers whose filters do not match ran: {wrong}")


def embedded(play: Play) -> None:
    play.expect("the app exits by itself (3 steps, then the operator stops)",
                lambda: play.gone() is not None, timeout=play.timeout + 30)
    play.notes.append(str(play.gone()))
    if "exited with 0" not in str(play.gone()):
        raise Missed(str(play.gone()))
    for step in range(3):
        for line in (f"Hello, kopf-example-{step}!", f"Good bye, kopf-example-{step}!"):
            if line not in play.output():
                raise Missed(f"the line {line!r} is not in its output")
    left = play.kube.list(*KEX, "default")
    if any(o["metadata"]["name"].startswith("kopf-example-") for o in left):
        raise Missed("objects left in default: their delete handlers did not let them go")


def hooks(play: Play) -> None:
    play.logged("Logging in in 2s...", "Starting retried...")
    play.kube.create(a_pod("watched", play.namespace))

    def probed() -> Any:
        report = _probe(play.liveness)
        return report if report.get("monitored_objects") == {play.namespace: ["watched"]} else None

    report = play.expect("the probes: monitored_objects names the Pod", probed)
    if report.get("tasks_count") != 1:
        raise Missed(f"probe tasks_count is {report.get('tasks_count')}, not 1")
    play.signal(signal.SIGTERM)
    play.expect("it exits on SIGTERM", lambda: play.gone() is not None)
    play.logged("Cleaning up...", "All pod-tasks are requested to stop...")


def daemons(play: Play) -> None:
    obj_yaml(play, "ex")
    play.expect("status.message 'Failed 3 times.' (patched on each failure)",
                lambda: play.status("ex").get("message") == "Failed 3 times.")
    play.logged("=> Ping from a sync daemon: field='value', retry=3", "=> Ping from an async daemon: field='value'")
    play.delete_and_gone("ex")


def timers(play: Play) -> None:
    obj_yaml(play, "ex")
    play.logged("Ping from a sync timer: field='value'", "Ping from an async timer: field='value'")


def indexing(play: Play) -> None:
    name = f"running-{play.uid}"
    play.kube.create(a_pod(name, "default", app=play.uid))
    play.kube.call("PATCH", f"/api/v1/namespaces/default/pods/{name}/status", {"status": {"phase": "Running"}},
                   content_type="application/merge-patch+json")
    obj_yaml(play, "ex")
    play.expect(f"status['running-pods'] names default::{name}",
                lambda: f"default::{name}" in (play.status("ex").get("running-pods") or []))


def admission(play: Play) -> None:
    play.expect("ValidatingWebhookConfiguration auto.kopf.dev",
                lambda: play.kube.get("admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", None,
                                      "auto.kopf.dev"))
    play.expect("MutatingWebhookConfiguration auto.kopf.dev",
                lambda: play.kube.get("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", None,
                                      "auto.kopf.dev"))
    refused = _refused(play, "wrong", {"field": "wrong"})
    if "Meh! I don't like it. Change the field." not in refused:
        raise Missed(f"spec.field=wrong: {refused or 'admitted'}")
    refused = _refused(play, "lazy", {"field": "not-allowed"})
    if "I'm too lazy anyway. Go away!" not in refused or "555" not in refused:
        raise Missed(f"spec.field=not-allowed: {refused or 'admitted'}")
    made = play.kex("mutated", {"field": "x"}, labels={"somelabel": "somevalue"})
    if made["spec"].get("injected") != 123:
        raise Missed(f"spec.injected is {made['spec'].get('injected')!r}, not 123 (the mutating webhook)")


def _refused(play: Play, name: str, spec: dict[str, Any]) -> str:
    """The API server's refusal of a creation (empty if it was admitted); retried while the webhook is not
    reachable yet (the configuration is written before the server answers)."""
    deadline = time.monotonic() + play.timeout
    while True:
        try:
            play.kex(name, spec)
            return ""
        except RuntimeError as exc:
            text = str(exc)
            if "failed calling webhook" not in text or time.monotonic() > deadline:
                return text
            time.sleep(1.0)


def all_at_once(play: Play) -> None:
    parent = obj_yaml(play, "ex")
    play.logged("Starting retried...")
    # create_2 fails once and is retried after the default backoff: Kopf's is 60 s.
    play.expect("status.create_1 and status.create_2 (after its one retry)",
                lambda: play.status("ex").get("create_1") == {"job1-status": 100}
                and play.status("ex").get("create_2") == {"job2-status": 100}, timeout=play.timeout + 60)
    play.expect("a Pod labelled application=kopf-example-10, owned by the KopfExample",
                      lambda: next((p for p in pods(play, selector="application=kopf-example-10")
                                    if owned_by(p, parent)), None))
    play.logged("This pod is special for us.")
    play.expect("the Warning Event 'Cannot do something'",
                lambda: any(e["type"] == "Warning" and e["message"] == "Cannot do something"
                            for e in play.events("ex")))
    play.kube.patch(*KEX, play.namespace, "ex", {"spec": {"lst": [1, 2]}})
    play.logged("Handling the FIELD = None -> [1, 2]", "Handling the diff")
    play.delete_and_gone("ex")
    play.signal(signal.SIGTERM)
    play.expect("it exits on SIGTERM", lambda: play.gone() is not None)
    play.logged("Cleaning up in 3s...")


def _probe(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # the operator's own endpoint, on loopback
            return dict(json.loads(response.read()))
    except (OSError, ValueError):
        return {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


EXAMPLES = [
    Example("01-minimal", minimal),
    Example("02-children", children, needs=("pykube", "yaml")),
    Example("03-exceptions", exceptions),
    Example("04-events", events),
    Example("05-handlers", handlers),
    Example("06-peering", peering),
    Example("07-subhandlers", subhandlers),
    Example("08-events", event_handlers),
    Example("09-testing", testing),
    Example("10-builtins", builtins, needs=("pykube",)),
    Example("11-filtering-handlers", filtering),
    Example("12-embedded", embedded, script=True, needs=("pykube",)),
    Example("13-hooks", hooks, liveness=True, needs=("pykube",)),
    Example("14-daemons", daemons),
    Example("15-timers", timers),
    Example("16-indexing", indexing, also_default=True),
    Example("17-admission", admission),
    Example("99-all-at-once", all_at_once, needs=("pykube", "yaml")),
]

__all__ = ["EXAMPLES", "Example", "Play", "free_port"]
