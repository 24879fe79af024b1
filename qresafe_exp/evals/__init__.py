"""Evaluation suites: which prompts, which rule turns a response into a verdict, which rate."""
