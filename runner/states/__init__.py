"""An Amazon States Language interpreter: whole state machines, both query languages.

See docs/states.md for the modules and their contracts.
"""
