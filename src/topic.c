/* placeholder: written by the lead */
