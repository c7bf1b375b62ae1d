"""The simulated PBX's call mix: each call as the CDRs Asterisk's cdr_manager sends when it ends.

CDRs carry the `[mappings]` LinkedID and Sequence, times in the PBX's local time
(`YYYY-MM-DD HH:MM:SS`, no offset); an answered call also names its MixMonitor recording
`<type>-<to>-<from>-<date>-<time>-${UNIQUEID}.wav` (FreePBX style). The shapes follow
tests/fixtures/ami and tests/fixtures/paired:

| scenario   | CDRs (all sharing the caller's LinkedID)                                             |
|------------|--------------------------------------------------------------------------------------|
| internal   | phone → phone, ANSWERED; now and then a hangup-handler `h` CDR (ANSWERED: kept)      |
| outbound   | phone → trunk, ANSWERED                                                              |
| inbound    | trunk → phone, ANSWERED                                                              |
| queue      | trunk → queue 300: 1-3 agent attempts (dst `s`, NO ANSWER, 0 s), then an agent's two |
|            | legs (or, now and then, the caller gives up)                                         |
| forwarded  | phone → ring group 600 → Local channel → phone: two legs                             |
| no_answer  | NO ANSWER, no AnswerTime; often an `h` CDR (NO ANSWER, 0 s: filtered by default)     |
| busy       | BUSY, 0 s; sometimes an `h` CDR                                                      |
| congestion | phone → trunk, CONGESTION                                                            |
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

Headers = tuple[tuple[str, str], ...]

# Recordings are cut to at most this long, whatever the call's length, to keep the demo light.
MAX_RECORDING_S = 1.0
MIN_RECORDING_S = 0.25  # 4 KB of audio: above RECORDING_MIN_FILE_SIZE's default 1 KB

PHONES = (
    ("101", "Alice Martin"),
    ("102", "José Müller"),
    ("103", "O'Brien, Pat"),
    ("104", "Zoë Ødegård"),
    ("105", "Bob Chen"),
    ("106", "Chloé Lefèvre"),
    ("107", "Grace Hopper"),
    ("108", "Heidi Schäfer"),
)
OUTSIDE = (
    ("5145550123", "MONTREAL QC"),
    ("4165550188", "WIRELESS CALLER"),
    ("6135550142", ""),
    ("18005550199", "ACME Corp"),
    ("3125550111", "Ramírez, Ana"),
)
TRUNK = "PJSIP/trunk-provider"
QUEUE = "300"
RING_GROUP = "600"


@dataclass(frozen=True)
class Leg:
    """One CDR of a call; times are Unix seconds, `answer` None when nobody answered."""

    src: str
    dst: str
    dcontext: str
    clid: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: float
    answer: float | None
    end: float
    disposition: str
    uniqueid: str
    accountcode: str = ""
    userfield: str = ""

    @property
    def billsec(self) -> int:
        """Seconds from answer to end (0 when not answered)."""
        return 0 if self.answer is None else int(self.end) - int(self.answer)


@dataclass(frozen=True)
class Recording:
    """A MixMonitor file to write when the call ends."""

    name: str
    seconds: float


@dataclass(frozen=True)
class Call:
    """One simulated call: its scenario, its CDRs in the order Asterisk sends them, its recording."""

    scenario: str
    cdrs: tuple[Headers, ...]
    recording: Recording | None = None


def caller_id(number: str, name: str) -> str:
    """Format a CallerID as Asterisk does: `"Name" <number>`."""
    return f'"{name}" <{number}>'


class CallFactory:
    """Builds calls: channel names, UniqueIDs and Sequence numbers as one Asterisk would number them."""

    def __init__(self, rng: random.Random, zone: ZoneInfo | None = None) -> None:
        self.rng = rng
        self.zone = zone
        self._uniqueids = itertools.count(rng.randrange(10, 500))
        self._channels = itertools.count(rng.randrange(0x10, 0x1000))
        self._sequence = itertools.count(rng.randrange(1, 1000))

    def local_time(self, moment: float) -> str:
        """Format a moment as the PBX writes it: its local time, whole seconds, no offset."""
        if self.zone is None:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))
        return datetime.fromtimestamp(moment, self.zone).strftime("%Y-%m-%d %H:%M:%S")

    def uniqueid(self, created: float) -> str:
        """A new channel's UniqueID: its creation time and Asterisk's channel counter."""
        return f"{int(created)}.{next(self._uniqueids)}"

    def channel(self, resource: str) -> str:
        """A new channel's name, e.g. `PJSIP/101-0000002a`."""
        return f"{resource}-{next(self._channels):08x}"

    def local_pair(self, exten: str, context: str) -> tuple[str, str]:
        """The two halves of a Local channel: `Local/101@ctx-0000002b;1` and `;2`."""
        name = self.channel(f"Local/{exten}@{context}")
        return f"{name};1", f"{name};2"

    def cdr(self, leg: Leg, linkedid: str) -> Headers:
        """Build the Cdr event's headers, in cdr_manager's order, with the [mappings] fields."""
        return (
            ("Event", "Cdr"),
            ("Privilege", "cdr,all"),
            ("AccountCode", leg.accountcode),
            ("Source", leg.src),
            ("Destination", leg.dst),
            ("DestinationContext", leg.dcontext),
            ("CallerID", leg.clid),
            ("Channel", leg.channel),
            ("DestinationChannel", leg.dstchannel),
            ("LastApplication", leg.lastapp),
            ("LastData", leg.lastdata),
            ("StartTime", self.local_time(leg.start)),
            ("AnswerTime", "" if leg.answer is None else self.local_time(leg.answer)),
            ("EndTime", self.local_time(leg.end)),
            ("Duration", str(int(leg.end) - int(leg.start))),
            ("BillableSeconds", str(leg.billsec)),
            ("Disposition", leg.disposition),
            ("AMAFlags", "DOCUMENTATION"),
            ("UniqueID", leg.uniqueid),
            ("UserField", leg.userfield),
            ("LinkedID", linkedid),
            ("Sequence", str(next(self._sequence))),
        )

    def recording(self, kind: str, to: str, source: str, leg: Leg) -> Recording:
        """Name the MixMonitor file FreePBX-style, the UniqueID last; length from the billed time."""
        stamp = datetime.fromtimestamp(leg.start, self.zone).strftime("%Y%m%d-%H%M%S")
        seconds = min(MAX_RECORDING_S, max(MIN_RECORDING_S, leg.billsec / 100))
        return Recording(f"{kind}-{to}-{source}-{stamp}-{leg.uniqueid}.wav", seconds)

    def call(
        self, scenario: str, legs: list[Leg], recording: Recording | None = None, *, caller_last: bool = False
    ) -> Call:
        """Number the legs' CDRs in creation order; the first leg (the caller's) gives the LinkedID.

        With `caller_last`, the caller's CDR is sent after the others, as Asterisk does when the
        other channels (Local halves, agents rung by a queue) go away before the caller's.
        """
        linkedid = legs[0].uniqueid
        cdrs = [self.cdr(leg, linkedid) for leg in legs]
        if caller_last:
            cdrs.append(cdrs.pop(0))
        return Call(scenario, tuple(cdrs), recording)

    def hangup_handler(self, leg: Leg) -> Leg:
        """The `h` extension's CDR on the same channel (cdr.conf endbeforehexten=no)."""
        if leg.answer is None:
            return replace(leg, dst="h", lastapp="AGI", lastdata="hangup-report.agi", start=leg.end)
        return replace(leg, dst="h", lastapp="AGI", lastdata="hangup-report.agi")

    def two_phones(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """Pick a caller and a callee among the phones."""
        caller, callee = self.rng.sample(PHONES, 2)
        return caller, callee


def internal(f: CallFactory, now: float) -> Call:
    """A phone calls another phone, which answers."""
    (a, a_name), (b, _) = f.two_phones()
    ring, talk = f.rng.randint(2, 12), f.rng.randint(5, 400)
    start = now - ring - talk
    uid = f.uniqueid(start)
    f.uniqueid(start)  # the callee's channel: it has no CDR of its own in a plain Dial
    leg = Leg(
        src=a, dst=b, dcontext="from-internal", clid=caller_id(a, a_name),
        channel=f.channel(f"PJSIP/{a}"), dstchannel=f.channel(f"PJSIP/{b}"),
        lastapp="Dial", lastdata=f"PJSIP/{b},30,tT",
        start=start, answer=start + ring, end=now, disposition="ANSWERED", uniqueid=uid,
        accountcode=f"acct-{a}",
    )  # fmt: skip
    legs = [leg]
    if f.rng.random() < 0.2:
        legs.append(f.hangup_handler(leg))
    return f.call("internal", legs, f.recording("internal", b, a, leg))


def outbound(f: CallFactory, now: float) -> Call:
    """A phone calls out through the trunk; the far end answers."""
    (a, a_name), _ = f.two_phones()
    number = f.rng.choice(OUTSIDE)[0]
    ring, talk = f.rng.randint(3, 15), f.rng.randint(10, 900)
    start = now - ring - talk
    uid = f.uniqueid(start)
    f.uniqueid(start)
    leg = Leg(
        src=a, dst=number, dcontext="from-internal", clid=caller_id(a, a_name),
        channel=f.channel(f"PJSIP/{a}"), dstchannel=f.channel(TRUNK),
        lastapp="Dial", lastdata=f"PJSIP/{number}@trunk-provider,300,T",
        start=start, answer=start + ring, end=now, disposition="ANSWERED", uniqueid=uid,
        accountcode=f"acct-{a}",
    )  # fmt: skip
    return f.call("outbound", [leg], f.recording("out", number, a, leg))


def inbound(f: CallFactory, now: float) -> Call:
    """A caller from outside reaches a phone directly (DID), which answers."""
    number, name = f.rng.choice(OUTSIDE)
    _, (b, _) = f.two_phones()
    ring, talk = f.rng.randint(2, 20), f.rng.randint(5, 600)
    start = now - ring - talk
    uid = f.uniqueid(start)
    f.uniqueid(start)
    leg = Leg(
        src=number, dst=b, dcontext="from-did-direct", clid=caller_id(number, name),
        channel=f.channel(TRUNK), dstchannel=f.channel(f"PJSIP/{b}"),
        lastapp="Dial", lastdata=f"PJSIP/{b},20,tr",
        start=start, answer=start + ring, end=now, disposition="ANSWERED", uniqueid=uid,
    )  # fmt: skip
    return f.call("inbound", [leg], f.recording("in", b, number, leg))


def _queue_attempt(f: CallFactory, caller: Leg, exten: str, when: float) -> Leg:
    """An agent rung by the queue who did not answer: dst `s`, NO ANSWER, 0 s."""
    first, _ = f.local_pair(exten, "from-queue")
    return Leg(
        src=caller.src, dst="s", dcontext="from-queue", clid=caller.clid,
        channel=first, dstchannel="", lastapp="AppQueue", lastdata="(Outgoing Line)",
        start=when, answer=None, end=when, disposition="NO ANSWER", uniqueid=f.uniqueid(when),
    )  # fmt: skip


def queue(f: CallFactory, now: float) -> Call:
    """A caller waits in queue 300; agents are rung until one answers (or the caller gives up)."""
    number, name = f.rng.choice(OUTSIDE)
    gives_up = f.rng.random() < 0.15
    wait, talk = f.rng.randint(5, 90), 0 if gives_up else f.rng.randint(20, 600)
    start = now - wait - talk
    # The PBX answers the caller itself (greeting, music on hold) before the queue starts.
    caller = Leg(
        src=number, dst=QUEUE, dcontext="ext-queues", clid=caller_id(number, name),
        channel=f.channel(TRUNK), dstchannel="", lastapp="Queue", lastdata=f"{QUEUE},t,,,300",
        start=start, answer=start, end=now, disposition="ANSWERED", uniqueid=f.uniqueid(start),
    )  # fmt: skip
    rung = f.rng.sample(PHONES, f.rng.randint(1, 3))
    attempts = [_queue_attempt(f, caller, exten, start + wait / 2) for exten, _ in rung]
    if gives_up:
        return f.call("queue", [caller, *attempts], caller_last=True)
    agent = f.rng.choice(PHONES)[0]
    first, second = f.local_pair(agent, "from-queue")
    caller = replace(caller, dstchannel=first)
    agent_leg = Leg(
        src=number, dst=agent, dcontext="from-queue", clid=caller.clid,
        channel=second, dstchannel=f.channel(f"PJSIP/{agent}"), lastapp="Dial", lastdata=f"PJSIP/{agent},,tr",
        start=start + wait, answer=start + wait, end=now, disposition="ANSWERED",
        uniqueid=f.uniqueid(start + wait),
    )  # fmt: skip
    recording = f.recording("q", QUEUE, number, caller)
    return f.call("queue", [caller, *attempts, agent_leg], recording, caller_last=True)


def forwarded(f: CallFactory, now: float) -> Call:
    """A phone calls ring group 600, which rings a phone through a Local channel: two legs."""
    (a, a_name), (b, _) = f.two_phones()
    ring, talk = f.rng.randint(2, 15), f.rng.randint(5, 300)
    start = now - ring - talk
    uid = f.uniqueid(start)
    first, second = f.local_pair(b, "from-internal")
    outer = Leg(
        src=a, dst=RING_GROUP, dcontext="ext-group", clid=caller_id(a, a_name),
        channel=f.channel(f"PJSIP/{a}"), dstchannel=first,
        lastapp="Dial", lastdata=f"Local/{b}@from-internal,20",
        start=start, answer=start + ring, end=now, disposition="ANSWERED", uniqueid=uid,
        accountcode=f"acct-{a}", userfield="ringgroup",
    )  # fmt: skip
    inner = replace(
        outer, dst=b, dcontext="from-internal", channel=second, dstchannel=f.channel(f"PJSIP/{b}"),
        lastdata=f"PJSIP/{b},20,tT", uniqueid=f.uniqueid(start), accountcode="", userfield="",
    )  # fmt: skip
    recording = f.recording("rg", RING_GROUP, a, outer)
    return f.call("forwarded", [outer, inner], recording, caller_last=True)


def _unanswered(f: CallFactory, now: float, disposition: str, ring: int, h_chance: float) -> list[Leg]:
    (a, a_name), (b, _) = f.two_phones()
    start = now - ring
    uid = f.uniqueid(start)
    f.uniqueid(start)
    leg = Leg(
        src=a, dst=b, dcontext="from-internal", clid=caller_id(a, a_name),
        channel=f.channel(f"PJSIP/{a}"), dstchannel=f.channel(f"PJSIP/{b}"),
        lastapp="Dial", lastdata=f"PJSIP/{b},30,tT",
        start=start, answer=None, end=now, disposition=disposition, uniqueid=uid,
        accountcode=f"acct-{a}",
    )  # fmt: skip
    if f.rng.random() < h_chance:
        return [leg, f.hangup_handler(leg)]
    return [leg]


def no_answer(f: CallFactory, now: float) -> Call:
    """A phone rings out unanswered."""
    return f.call("no_answer", _unanswered(f, now, "NO ANSWER", f.rng.randint(15, 30), 0.5))


def busy(f: CallFactory, now: float) -> Call:
    """The callee is busy."""
    return f.call("busy", _unanswered(f, now, "BUSY", f.rng.randint(0, 1), 0.3))


def congestion(f: CallFactory, now: float) -> Call:
    """The trunk cannot place an outside call."""
    (a, a_name), _ = f.two_phones()
    number = f.rng.choice(OUTSIDE)[0]
    leg = Leg(
        src=a, dst=number, dcontext="from-internal", clid=caller_id(a, a_name),
        channel=f.channel(f"PJSIP/{a}"), dstchannel="",
        lastapp="Dial", lastdata=f"PJSIP/{number}@trunk-provider,300,T",
        start=now, answer=None, end=now, disposition="CONGESTION", uniqueid=f.uniqueid(now),
        accountcode=f"acct-{a}",
    )  # fmt: skip
    return f.call("congestion", [leg])


Scenario = Callable[[CallFactory, float], Call]
SCENARIOS: tuple[tuple[Scenario, int], ...] = (
    (internal, 20),
    (outbound, 15),
    (inbound, 10),
    (queue, 15),
    (forwarded, 8),
    (no_answer, 15),
    (busy, 8),
    (congestion, 4),
)
