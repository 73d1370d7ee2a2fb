"""The FreeSWITCH Event Socket side: wire frames, the outbound-socket router, the event listener.

Every connection is made of esl.protocol's classes, which carry the fixes greenswitch needs."""
