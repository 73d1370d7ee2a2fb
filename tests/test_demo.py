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
    assert "bridge [leg_timeout=20,fsrouter_route=sticky]user/1004@${domain_name}  ->  NO_ANSWER" in out
    assert "was Taras" in out and "reason: agent_disabled" in out and "reason: not_a_client" in out
    assert "6666" not in out.split("'1001,user/6666@evil'.")[1]  # the hostile caller ID went nowhere
    assert "nobody answered: back to the dialplan" in out
    assert "Anna passed the call on to Bohdan (1002)" in out


def test_demo_prints_the_board_and_an_agents_page_and_serves_them_while_the_day_plays(tmp_path):
    import re

    import gevent

    from fsrouter.demo import Demo
    from fsrouter.http.client import request

    result = CliRunner().invoke(main, ["demo", "--speed", "8"])
    assert result.exit_code == 0, result.output
    board, agent = (re.search(rf"(http://127\.0\.0\.1:\d+/{path}\?token=[\w-]+)", result.output) for path in
                    ("board", "agent/1002"))
    assert board and agent, result.output
    demo = Demo(8.0, tmp_path, linger=1.0)
    playing = gevent.spawn(demo.run)
    try:
        assert demo.daemon.listener.connected.wait(5)
        base = "http://{}:{}".format(*demo.daemon.api.address)
        page = request("GET", demo.links.board_url(base), timeout=5)
        assert page.status == 200 and b'id="missed"' in page.body
        assert request("GET", demo.links.agent_url(base, "1002"), timeout=5).status == 200
        playing.join(60)
        assert playing.successful()
    finally:
        playing.kill()
        demo.close()
