"""Membership inference (OWASP ML04): is this record in the training set?"""
