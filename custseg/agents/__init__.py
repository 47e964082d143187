"""Planner → Writer → Reviewer over Kafka: the message envelope, the topics, the roles, the
runtime that answers (consumer groups, dead letters) and the capture that keeps conversations."""
