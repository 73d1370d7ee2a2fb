"""Properties of the pure core, checked on generated input (hypothesis)."""
import functools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fsrouter.core.model import AUTO, INBOUND, MANUAL, OUTBOUND, Agent, Binding, Call, Group
from fsrouter.core.numbers import NotAClient, normalize
from fsrouter.core.routing import decide
from fsrouter.core.rules import learn, qualifies
from fsrouter.core.settings import Settings, format_duration, parse_duration

FAST = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIENT = "+380501234567"
T0 = datetime(2024, 5, 1, tzinfo=UTC)
REGIONS = st.sampled_from(["UA", "DE", "US", "GB", "FR", "IT", "PL", "RU"])
HOSTILE = [",", "|", "[", "]", "{", "}", "^", "&", "'", '"', "\n", "${", "}"]

# Text that looks like phone numbers, so normalisation gets past its first check often.
phoneish = st.text(alphabet="+0123456789 ()-.", min_size=0, max_size=24)
digits = st.text(alphabet="0123456789", min_size=7, max_size=15)


def _normalize_or_none(raw, region):
    try:
        return normalize(raw, region)
    except NotAClient:
        return None


# --- numbers ---------------------------------------------------------------------------------

@FAST
@given(raw=st.one_of(phoneish, digits, digits.map(lambda d: "+" + d), digits.map(lambda d: "0" + d)),
       region=REGIONS)
def test_normalize_is_idempotent(raw, region):
    once = _normalize_or_none(raw, region)
    if once is not None:
        assert once.startswith("+") and once[1:].isdigit()
        assert normalize(once, region) == once
        assert all(normalize(once, other) == once for other in ("UA", "US", "DE"))


@FAST
@given(raw=st.text(max_size=60), region=REGIONS)
def test_normalize_raises_nothing_but_not_a_client(raw, region):
    try:
        result = normalize(raw, region)
    except NotAClient:
        return
    assert result.startswith("+") and result[1:].isdigit()


@FAST
@given(before=st.one_of(phoneish, st.text(max_size=20)), after=st.one_of(phoneish, st.text(max_size=20)),
       bad=st.sampled_from(HOSTILE), region=REGIONS)
def test_text_with_dial_string_syntax_is_never_a_client(before, after, bad, region):
    for raw in (before + bad + after, bad + "0501234567", "0501234567" + bad, "+38050" + bad + "1234567"):
        assert _normalize_or_none(raw, region) is None


@FAST
@given(ext=st.text(alphabet="0123456789", min_size=1, max_size=6), region=REGIONS)
def test_short_numbers_are_never_clients(ext, region):
    assert _normalize_or_none(ext, region) is None
    assert _normalize_or_none("+" + ext, region) is None


# --- settings --------------------------------------------------------------------------------

@FAST
@given(value=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10**6)))
def test_format_duration_reads_back_exactly(value):
    assert parse_duration(format_duration(value)) == value


@FAST
@given(text=st.text(max_size=20))
def test_parse_duration_raises_only_value_error(text):
    try:
        assert parse_duration(text) >= timedelta(0)
    except ValueError:
        pass


# --- learning --------------------------------------------------------------------------------

AGENT_EXTS = ["1001", "1002", "1003", "1004"]
rule_settings = st.builds(
    Settings,
    min_talk=st.sampled_from([timedelta(seconds=1), timedelta(seconds=10), timedelta(seconds=30)]),
    learn_from=st.sampled_from(["inbound", "outbound", "both"]),
    outbound_requires_answer=st.booleans(),
)


@st.composite
def call_lists(draw):
    n = draw(st.integers(min_value=1, max_value=8))
    calls = []
    for i in range(n):
        ended = T0 + timedelta(seconds=draw(st.integers(min_value=0, max_value=50)))  # ties likely
        talk = float(draw(st.sampled_from([0, 1, 5, 9.5, 10, 30, 120])))
        calls.append(Call(
            direction=draw(st.sampled_from([INBOUND, OUTBOUND])), client=CLIENT,
            agent=draw(st.sampled_from(AGENT_EXTS + [None])), started_at=ended - timedelta(minutes=5),
            ended_at=ended, talk_seconds=talk, answered=draw(st.booleans()) if talk else False,
            uuid=draw(st.sampled_from([None, f"u{i}", "dup"])),
        ))
    return calls


def _fold(calls, s, start=None):
    return functools.reduce(lambda current, c: learn(c, s, current) or current, calls, start)


@FAST
@given(calls=call_lists(), s=rule_settings, data=st.data())
def test_learning_is_order_independent_and_latest_ended_call_wins(calls, s, data):
    shuffled = data.draw(st.permutations(calls))
    result, other = _fold(calls, s), _fold(shuffled, s)
    assert result == other
    qualifying = [c for c in calls if qualifies(c, s)]
    if not qualifying:
        assert result is None
        return
    latest = max(c.ended_at for c in qualifying)
    assert result.source == AUTO and result.at == latest
    assert result.agent in {c.agent for c in qualifying if c.ended_at == latest}
    if len({c.agent for c in qualifying if c.ended_at == latest}) == 1:
        assert result.agent == next(c.agent for c in qualifying if c.ended_at == latest)


@FAST
@given(calls=call_lists(), s=rule_settings)
def test_learning_never_moves_a_binding_back_in_time(calls, s):
    current = None
    for c in calls:
        new = learn(c, s, current)
        if new is not None:
            assert current is None or new.at >= current.at
            current = new


# --- routing ---------------------------------------------------------------------------------

EXTS = ["1001", "1002", "1003", "2001", "2002"]


@st.composite
def worlds(draw):
    agents = {}
    for ext in draw(st.lists(st.sampled_from(EXTS), unique=True, max_size=len(EXTS))):
        agents[ext] = Agent(
            ext=ext, name=ext, dial_string=draw(st.sampled_from(["", f"user/{ext}@pbx", f"sofia/gw/x/{ext}"])),
            priority=draw(st.integers(0, 3)), enabled=draw(st.booleans()),
            groups=frozenset(draw(st.sets(st.sampled_from(["sales", "support"])))),
        )
    bindings = {}
    for source in draw(st.sets(st.sampled_from([MANUAL, AUTO]))):
        bindings[source] = Binding(
            client=CLIENT, agent=draw(st.sampled_from(EXTS + ["9999"])), source=source,
            at=T0 - timedelta(days=draw(st.integers(0, 60))),
            expires_at=draw(st.sampled_from([None, T0 - timedelta(hours=1), T0 + timedelta(hours=1)])),
        )
    group = Group("sales", strategy=draw(st.sampled_from(["simultaneous", "sequential"])),
                  sticky_scope=draw(st.sampled_from(["any", "members"])))
    s = Settings(mode=draw(st.sampled_from(["manual", "auto", "both"])),
                 fallback_excludes_sticky=draw(st.booleans()),
                 lookback=draw(st.sampled_from([timedelta(0), timedelta(days=7), timedelta(days=30)])))
    client = draw(st.sampled_from([CLIENT, None]))
    return client, group, s, bindings, agents


@FAST
@given(world=worlds())
def test_decide_never_rings_disabled_or_unknown_agents(world):
    client, group, s, bindings, agents = world
    p = decide(client, group, T0, s, bindings, agents)
    if p.sticky is not None:
        assert p.sticky.agent in agents and agents[p.sticky.agent].enabled
        assert p.source in (MANUAL, AUTO) and p.reason == p.source
        assert bindings[p.source].agent == p.sticky.agent
        assert p.sticky.timeout == s.sticky_timeout
        if group.sticky_scope == "members":
            assert group.name in agents[p.sticky.agent].groups
    else:
        assert p.source is None and p.reason not in (MANUAL, AUTO)
    for leg in p.fallback:
        assert leg.agent in agents and agents[leg.agent].enabled
        assert group.name in agents[leg.agent].groups
    if s.fallback_excludes_sticky and p.sticky is not None:
        assert p.sticky.agent not in [leg.agent for leg in p.fallback]
    priorities = [agents[leg.agent].priority for leg in p.fallback]
    assert priorities == sorted(priorities)


@FAST
@given(world=worlds())
def test_plan_dial_strings_are_a_subset_of_configured_ones(world):
    client, group, s, bindings, agents = world
    p = decide(client, group, T0, s, bindings, agents)
    legs = ([p.sticky] if p.sticky else []) + list(p.fallback)
    configured = {a.ext: a.dial_string for a in agents.values()}
    for leg in legs:
        assert leg.dial_string == configured[leg.agent]
    assert {leg.dial_string for leg in legs} <= set(configured.values())
