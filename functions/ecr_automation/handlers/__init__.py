"""Lambda entry points: parse the event, wire Powertools, call one piece of logic."""
