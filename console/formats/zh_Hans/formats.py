"""Simplified Chinese number formats: Django's group digits by four with no separator (134515008);
the console shows 134,515,008, as the platform's Chinese pages do."""

THOUSAND_SEPARATOR = ","
NUMBER_GROUPING = 3
