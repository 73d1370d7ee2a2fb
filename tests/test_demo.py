"""`fsrouter demo`, the README's first command: the real daemon routes a scripted office day."""
from click.testing import CliRunner

from fsrouter.cli import main


def test_demo_routes_an_office_day_and_shows_each_route_and_binding_change():
    result = CliRunner().invoke(main, ["demo", "--speed", "4"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "binding +380501234567 -> Olena (1003), new: answered inbound call, talked 180s" in out
    assert "binding +380671112233 -> Taras (1004), new: outbound call by agent, not answered" in out
    assert "answered by Olena (1003) on the sticky leg" in out
    assert "bridge [leg_timeout=20]user/1004@${domain_name}  ->  NO_ANSWER" in out
    assert "was Taras" in out and "reason: agent_disabled" in out and "reason: not_a_client" in out
    assert "6666" not in out.split("'1001,user/6666@evil'.")[1]  # the hostile caller ID went nowhere
    assert "nobody answered: back to the dialplan" in out
