"""Scene changes to an MQTT broker (`edgeasc listen --events --mqtt mqtt://host:port/topic`).
torch-free; paho-mqtt is the optional extra `mqtt`, imported only when --mqtt is given.

Two topics under the URL's topic T:
  T/events  every SceneEvent as JSON, QoS 1 (at least once), not retained;
  T/state   the current scene as JSON, QoS 1, retained, so a subscriber that connects later
            learns it at once; {"state": "offline"} when listening ends (and as the last
            will, should the process die without saying so).
Credentials never come from the URL (it shows in `ps` and shell history): the user name from
EDGEASC_MQTT_USERNAME, the password from EDGEASC_MQTT_PASSWORD or the file named by
EDGEASC_MQTT_PASSWORD_FILE. paho runs its network loop in its own thread and reconnects by
itself; what waits for the broker (unconnected, slow) is bounded by QUEUE messages: beyond it a
message is dropped and counted, so a dead broker never grows the process or stalls listening.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgeasc.errors import ConfigError

QUEUE = 1000            # messages waiting for the broker, at most
FLUSH_SECONDS = 5.0     # at the end: how long to wait for the broker to take what is queued


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    topic: str
    tls: bool
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never show the password
        return f"MqttTarget({self.host}:{self.port}/{self.topic}, tls={self.tls}, user={self.username!r})"


def parse_mqtt_url(url: str, env: dict | None = None) -> MqttTarget:
    """mqtt://host[:port]/topic (1883) or mqtts://host[:port]/topic (TLS, 8883)."""
    env = os.environ if env is None else env
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--mqtt {url!r}: not a URL mqtt://host:port/topic ({exc})") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"--mqtt {url!r}: the URL must start with mqtt:// or mqtts://")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("--mqtt: credentials do not belong in the URL (it shows in ps and shell history): set "
                          "EDGEASC_MQTT_USERNAME and EDGEASC_MQTT_PASSWORD or EDGEASC_MQTT_PASSWORD_FILE")
    if not parts.hostname:
        raise ConfigError(f"--mqtt {url!r}: no host")
    topic = parts.path.strip("/")
    if not topic or any(c in topic for c in "+\0") or "#" in url or "?" in url:  # "#": a URL fragment to urlsplit
        raise ConfigError(f"--mqtt {url!r}: needs a topic without wildcards (+, #), e.g. mqtt://host/home/scene")
    password = env.get("EDGEASC_MQTT_PASSWORD")
    if env.get("EDGEASC_MQTT_PASSWORD_FILE"):
        path = Path(env["EDGEASC_MQTT_PASSWORD_FILE"])
        try:
            password = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"EDGEASC_MQTT_PASSWORD_FILE {path}: cannot read it ({exc})") from None
    username = env.get("EDGEASC_MQTT_USERNAME")
    if password is not None and username is None:
        raise ConfigError("an MQTT password is set but EDGEASC_MQTT_USERNAME is not")
    return MqttTarget(parts.hostname, port or (8883 if parts.scheme == "mqtts" else 1883), topic,
                      parts.scheme == "mqtts", username, password)


class Publisher:
    """Publishes scene events and the retained state; counts what the bounded queue dropped."""

    def __init__(self, target: MqttTarget, queue: int = QUEUE):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ConfigError("--mqtt needs paho-mqtt: pip install 'edgeasc[mqtt]'") from None
        self.target, self.dropped, self.sent, self.acked = target, 0, 0, 0
        self._mqtt = mqtt
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.max_queued_messages_set(queue)
        self.client.on_publish = self._on_publish  # QoS 1: called on the broker's PUBACK
        self.client.reconnect_delay_set(1, 30)
        if target.username is not None:
            self.client.username_pw_set(target.username, target.password)
        if target.tls:
            self.client.tls_set()
        self.client.will_set(self.state_topic, json.dumps({"state": "offline"}), qos=1, retain=True)
        self.client.connect_async(target.host, target.port, keepalive=30)  # a broker down now is retried
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:  # noqa: ARG002
        self.acked += 1  # paho's network thread; an int increment is atomic under the GIL

    @property
    def state_topic(self) -> str:
        return f"{self.target.topic}/state"

    @property
    def events_topic(self) -> str:
        return f"{self.target.topic}/events"

    def _publish(self, topic: str, payload: dict, retain: bool) -> None:
        info = self.client.publish(topic, json.dumps(payload), qos=1, retain=retain)
        if info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
            self.dropped += 1
        else:  # sent now, or queued until the (re)connection (MQTT_ERR_NO_CONN)
            self.sent += 1

    def event(self, event) -> None:
        self._publish(self.events_topic, event.to_dict(), retain=False)
        self._publish(self.state_topic, {"state": "online", "label": event.label, "since": round(event.start, 3),
                                         "probability": event.probability, "at": event.at}, retain=True)

    def close(self) -> bool:
        """Mark the state offline, wait up to FLUSH_SECONDS for the broker to acknowledge what is
        queued; whether every message was delivered (none dropped, all acknowledged)."""
        self._publish(self.state_topic, {"state": "offline"}, retain=True)
        deadline = time.monotonic() + FLUSH_SECONDS
        while self.acked < self.sent and time.monotonic() < deadline:
            time.sleep(0.02)
        delivered = self.acked >= self.sent and self.dropped == 0
        self.client.disconnect()
        self.client.loop_stop()
        return delivered
