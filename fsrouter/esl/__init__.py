"""The FreeSWITCH Event Socket side: wire frames, the outbound-socket router, the event listener."""
