"""Drift monitoring: do the customers being scored still look like the champion's training data?"""
