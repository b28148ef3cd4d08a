"""Adapters: real logs into the estimators' frame (member_id, propensity, target_prob, reward)."""
