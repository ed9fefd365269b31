"""`edgeasc listen --events --mqtt`: URL and credential parsing, and scene changes delivered to
a real broker (amqtt, started here) and read back by a real subscriber (paho)."""

import json
import socket
import subprocess
import sys
import time

import pytest
from test_events import SILENCE, scene_stream

from conftest import run_cli_here
from edgeasc.errors import ConfigError
from edgeasc.runtime import mqtt
from edgeasc.runtime.events import SceneEvent

paho = pytest.importorskip("paho.mqtt.client")


def test_the_url_and_credentials():
    t = mqtt.parse_mqtt_url("mqtt://pi.local/home/scene/", env={})
    assert (t.host, t.port, t.topic, t.tls, t.username, t.password) == ("pi.local", 1883, "home/scene", False, None,
                                                                        None)
    t = mqtt.parse_mqtt_url("mqtts://10.0.0.2:9999/a", env={"EDGEASC_MQTT_USERNAME": "pi",
                                                           "EDGEASC_MQTT_PASSWORD": "s3cret"})
    assert (t.port, t.tls, t.username, t.password) == (9999, True, "pi", "s3cret") and "s3cret" not in repr(t)
    assert mqtt.parse_mqtt_url("mqtts://h/a", env={}).port == 8883
    for url, needle in (("mqtt://user:pw@host/t", "credentials do not belong in the URL"),
                        ("mqtt://user@host/t", "credentials do not belong in the URL"),
                        ("http://host/t", "mqtt:// or mqtts://"), ("mqtt://host", "needs a topic"),
                        ("mqtt://host/a/#", "without wildcards"), ("mqtt://host/a/+/b", "without wildcards"),
                        ("mqtt://host:99999/t", "not a URL"), ("mqtt:///t", "no host")):
        with pytest.raises(ConfigError, match=None) as exc:
            mqtt.parse_mqtt_url(url, env={})
        assert needle in str(exc.value) and "pw" not in str(exc.value), (url, exc.value)
    with pytest.raises(ConfigError, match="EDGEASC_MQTT_USERNAME is not"):
        mqtt.parse_mqtt_url("mqtt://h/t", env={"EDGEASC_MQTT_PASSWORD": "x"})


def test_the_password_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    env = {"EDGEASC_MQTT_USERNAME": "pi", "EDGEASC_MQTT_PASSWORD": "env", "EDGEASC_MQTT_PASSWORD_FILE": str(secret)}
    assert mqtt.parse_mqtt_url("mqtt://h/t", env=env).password == "from-a-file"  # the file wins
    with pytest.raises(ConfigError, match="cannot read it"):
        mqtt.parse_mqtt_url("mqtt://h/t", env={**env, "EDGEASC_MQTT_PASSWORD_FILE": str(tmp_path / "none")})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(port: int, folder) -> subprocess.Popen:
    """amqtt, a real MQTT 3.1.1 broker, on `port` (127.0.0.1), anonymous; returns once it listens."""
    config = folder / "broker.yaml"
    config.write_text(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\nplugins:\n"
                      "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")
    proc = subprocess.Popen([sys.executable, "-c", "from amqtt.scripts.broker_script import main; main()", "-c",
                             str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the amqtt broker did not start") from None
            time.sleep(0.2)


def stop_broker(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    port = free_port()
    proc = start_broker(port, tmp_path_factory.mktemp("broker"))
    try:
        yield port
    finally:
        stop_broker(proc)


class Subscriber:
    def __init__(self, port: int, topic: str):
        self.messages = []
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, json.loads(m.payload), m.retain,
                                                                        m.qos))
        subscribed = []
        self.client.on_subscribe = lambda *a: subscribed.append(1)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        wait_for(lambda: subscribed)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(condition, seconds=20):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_scene_changes_reach_a_real_broker(scenes_model, broker, tmp_path):
    source = tmp_path / "scenes.wav"
    source.write_bytes(scene_stream())
    live = Subscriber(broker, "home/scene/#")
    r = run_cli_here("listen", str(scenes_model), str(source), "--events", "--json", "--silence-db", "-50",
                     "--mqtt", f"mqtt://127.0.0.1:{broker}/home/scene")
    assert r.returncode == 0, r.stderr
    printed = [json.loads(line) for line in r.stdout.splitlines()]
    events = [line for line in printed if line["event"] == "scene"]
    assert [e["label"] for e in events] == ["hum", "rumble", SILENCE, "noise"]
    assert printed[-1]["mqtt"] == {"sent": 9, "dropped": 0, "delivered": True}
    assert "MQTT 127.0.0.1:" in r.stderr and "9 message(s) sent, 0 dropped" in r.stderr
    wait_for(lambda: len(live.messages) == 9)
    live.close()
    got = live.messages
    assert [(t, p) for t, p, _, _ in got if t == "home/scene/events"] == [("home/scene/events", e) for e in events]
    states = [p for t, p, _, _ in got if t == "home/scene/state"]
    assert states == [{"state": "online", "label": e["label"], "since": e["time"], "probability": e["probability"],
                       "at": e["at"]} for e in events] + [{"state": "offline"}]
    assert all(e["at"] is not None for e in events)
    assert {q for *_, q in got} == {1}
    late = Subscriber(broker, "home/scene/#")  # connects afterwards: the retained state only
    wait_for(lambda: late.messages)
    time.sleep(0.5)
    late.close()
    # (amqtt 0.12 hands a new subscriber the retained message twice, at QoS 0 and 1)
    assert {(t, json.dumps(p), retain) for t, p, retain, _ in late.messages} == \
        {("home/scene/state", json.dumps({"state": "offline"}), True)}


def test_an_unreachable_broker_drops_beyond_the_queue_and_never_blocks(monkeypatch):
    monkeypatch.setattr(mqtt, "FLUSH_SECONDS", 0.5)
    target = mqtt.parse_mqtt_url(f"mqtt://127.0.0.1:{free_port()}/t", env={})  # nobody listens there
    publisher = mqtt.Publisher(target, queue=3)
    t0 = time.monotonic()
    for k in range(4):  # 2 messages each: 3 are queued, the rest dropped
        publisher.event(SceneEvent(float(k), "hum", 0.9, None, 3))
    assert (publisher.sent, publisher.dropped) == (3, 5)
    assert publisher.close() is False and publisher.dropped == 6  # the offline state found the queue full too
    assert time.monotonic() - t0 < 5


def test_mqtt_needs_events_and_the_extra(scenes_model, tmp_path):
    r = run_cli_here("listen", str(scenes_model), "-", "--mqtt", "mqtt://h/t")
    assert r.returncode == 2 and "add --events" in r.stderr
    r = run_cli_here("listen", str(scenes_model), "-", "--events", "--mqtt", "mqtt://u:p@h/t")
    assert r.returncode == 2 and "credentials do not belong" in r.stderr and "u:p" not in r.stderr
    code = ("import sys; sys.modules['paho'] = None; sys.modules['torch'] = None\n"
            "from edgeasc.runtime.mqtt import Publisher, parse_mqtt_url\n"
            "from edgeasc.errors import ConfigError\n"
            "try:\n    Publisher(parse_mqtt_url('mqtt://h/t', env={}))\n"
            "except ConfigError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "--mqtt needs paho-mqtt: pip install 'edgeasc[mqtt]'", out.stderr


def test_a_subscriber_that_connects_mid_stream_learns_the_scene_at_once(broker):
    publisher = mqtt.Publisher(mqtt.parse_mqtt_url(f"mqtt://127.0.0.1:{broker}/garage", env={}))
    publisher.event(SceneEvent(12.0, "rumble", 0.75, "hum", 3))
    wait_for(lambda: publisher.acked == 2)  # published before the connection: queued, then delivered
    late = Subscriber(broker, "garage/#")
    wait_for(lambda: late.messages)
    time.sleep(0.5)
    late.close()
    assert {(t, json.dumps(p), retain) for t, p, retain, _ in late.messages} == \
        {("garage/state", json.dumps({"state": "online", "label": "rumble", "since": 12.0, "probability": 0.75,
                                                  "at": None}), True)}
    assert publisher.close() is True and (publisher.sent, publisher.acked, publisher.dropped) == (3, 3, 0)


def test_a_broker_restart_loses_nothing_that_was_queued(tmp_path):
    """The broker goes away after the first scene change and comes back: what was published
    meanwhile waits in the bounded queue and reaches the new broker (QoS 1: each message
    acknowledged by it), and the retained state there is the last scene."""
    port = free_port()
    first = start_broker(port, tmp_path)
    publisher = mqtt.Publisher(mqtt.parse_mqtt_url(f"mqtt://127.0.0.1:{port}/hall", env={}))
    try:
        publisher.event(SceneEvent(1.0, "hum", 0.9, None, 3))
        wait_for(lambda: publisher.acked == 2)
        stop_broker(first)
        wait_for(lambda: not publisher.client.is_connected())
        publisher.event(SceneEvent(5.0, "rumble", 0.8, "hum", 3))
        publisher.event(SceneEvent(9.0, "noise", 0.7, "rumble", 3))
        assert (publisher.sent, publisher.acked, publisher.dropped) == (6, 2, 0)  # queued, not lost
        second = start_broker(port, tmp_path)
        try:
            wait_for(lambda: publisher.acked == 6, seconds=60)  # paho reconnects with back-off (1 to 30 s)
            late = Subscriber(port, "hall/#")
            wait_for(lambda: late.messages)
            time.sleep(0.5)
            late.close()
            assert {(t, json.dumps(p), retain) for t, p, retain, _ in late.messages} == {
                ("hall/state", json.dumps({"state": "online", "label": "noise", "since": 9.0, "probability": 0.7,
                                            "at": None}),
                 True)}
            assert publisher.close() is True and (publisher.sent, publisher.acked, publisher.dropped) == (7, 7, 0)
        finally:
            stop_broker(second)
    finally:
        publisher.client.loop_stop()
