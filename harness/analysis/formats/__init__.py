"""Readers and writers of foreign benchmark formats."""
